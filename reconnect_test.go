package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// The backend goes away and comes back: holders are told, IsActive is false
// meanwhile, and the coordinator reconnects by itself with backoff. It runs
// on a server of its own, since it stops that server.
func TestReconnectAfterServerOutage(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)

	c, err := New(Config{
		ConnString: srv.URL(),
		// Not shorter: a session check unanswered within one interval
		// counts as a cut-off, and a server just restarted, on a machine
		// busy with the other tests, can take 100 ms to answer a ping.
		HeartbeatInterval:       250 * time.Millisecond,
		InitialReconnectBackoff: 20 * time.Millisecond,
		MaxReconnectBackoff:     200 * time.Millisecond,
		Logger:                  quietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx(t)))
	defer c.Stop(context.Background())
	l := c.GetLock("through-outage")
	mustAcquire(t, l, NoWait)
	require.True(t, c.IsActive())

	require.NoError(t, srv.StopServer())
	requireClosedWithin(t, l.Lost(), 5*time.Second, "Lost during outage")
	require.Eventually(t, func() bool { return !c.IsActive() }, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, l.Release(ctx(t)), ErrLockLost)
	ok, err := c.GetLock("during").Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.Error(t, err, "acquire while the server is down fails, it does not hang")

	require.NoError(t, srv.StartServer())
	require.Eventually(t, c.IsActive, 10*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, c.Stats().Reconnects, uint64(1))
	require.GreaterOrEqual(t, c.Stats().Lost, uint64(1))
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	conn := connect(t, srv.URL())
	var live bool
	require.NoError(t, conn.QueryRow(ctx(t),
		`SELECT EXISTS (SELECT 1 FROM pgcoord.live_members WHERE member_id = $1)`, c.MemberID()).Scan(&live))
	require.True(t, live, "member registered again after the outage")
}

// The reconnect waits grow from InitialReconnectBackoff to
// MaxReconnectBackoff, jittered, and never stop.
func TestReconnectBackoffSchedule(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL, InitialReconnectBackoff: 100 * time.Millisecond, MaxReconnectBackoff: 2 * time.Second})
	require.NoError(t, err)
	bo := c.reconnectBackoff()
	base := 100 * time.Millisecond
	distinct := map[time.Duration]bool{}
	capped := 0
	for i := range 40 {
		d := bo.NextBackOff()
		require.GreaterOrEqual(t, d, base/2, "wait %d", i)
		require.LessOrEqual(t, d, min(base*3/2, 2*time.Second), "wait %d: jitter never passes MaxReconnectBackoff", i)
		distinct[d] = true
		if d == 2*time.Second {
			capped++
		}
		base = min(base*2, 2*time.Second)
	}
	require.Greater(t, len(distinct), 10, "waits are jittered")
	// About half the waits at the cap would jitter above it; they are cut
	// to it. Over 35 such waits, fewer than 5 is a 1-in-10^5 chance.
	require.GreaterOrEqual(t, capped, 5, "waits above the cap are clamped to it")
}

// Start may take longer than SessionTimeout (a first migration on a fresh
// database, waiting here behind another process's schema creation), during
// which the server ends the sessions opened first for being idle: Start
// redials them and succeeds. The timeout is short, but not so short that a
// busy machine's pause between two statements reaches it.
func TestStartOutlastsSessionTimeout(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	const sessionTimeout = 500 * time.Millisecond
	// Another "process" creating the schema: Start's migration waits for its
	// lock (see ensureSchema) for three session timeouts.
	other := connect(t, dbURL)
	_, err := other.Exec(ctx(t), `SELECT pg_advisory_lock($1)`, hash.Key("pgcoord\x00create-schema"))
	require.NoError(t, err)
	unlocked := make(chan error, 1)
	go func() {
		time.Sleep(3 * sessionTimeout)
		_, err := other.Exec(context.Background(), `SELECT pg_advisory_unlock_all()`)
		unlocked <- err
	}()

	c, err := New(Config{
		ConnString:        dbURL,
		HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout:    sessionTimeout,
		Logger:            quietLogger(),
	})
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, c.Start(ctx(t)))
	require.NoError(t, <-unlocked)
	require.Greater(t, time.Since(began), 2*sessionTimeout, "Start waited for the schema lock")
	require.NoError(t, c.Stop(ctx(t)))
}
