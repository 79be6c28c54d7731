package pgcoord

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A heartbeat the server answers later than one interval (a loaded
// server) leaves the control session alone: its update is waited for, not
// cancelled, since cancelling a statement closes the control connection
// and with it the member lock, and every statement queued on the session
// would fail while it reconnects (make fleet: "control session is
// reconnecting"). The slowness is real: a trigger sleeps in each update of
// this member's row, on a server of the test's own.
func TestSlowHeartbeatKeepsControlSession(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	c, err := New(Config{
		ConnString:        srv.URL(),
		HeartbeatInterval: 200 * time.Millisecond, // SessionTimeout 1.4s: lease 1s
		Logger:            quietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx(t)))
	defer c.Stop(context.Background())
	held := c.GetLock("held-through-slow-beats")
	mustAcquire(t, held, NoWait)

	conn := connect(t, srv.URL())
	_, err = conn.Exec(ctx(t), `CREATE SEQUENCE public.slow_beats`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx(t), `CREATE FUNCTION public.slow_beat() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN PERFORM nextval('public.slow_beats'); PERFORM pg_sleep(0.4); RETURN NEW; END $$`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx(t), fmt.Sprintf(`CREATE TRIGGER slow_beat BEFORE UPDATE ON pgcoord.members
		FOR EACH ROW WHEN (NEW.member_id = '%s') EXECUTE FUNCTION public.slow_beat()`, c.MemberID()))
	require.NoError(t, err)

	// Each update takes 400 ms, twice the interval: beats are late, and
	// the next beat waits for the one in flight instead of cutting it.
	var beats int64
	require.Eventually(t, func() bool {
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT last_value FROM public.slow_beats`).Scan(&beats))
		return beats >= 4
	}, 10*time.Second, 50*time.Millisecond, "slow beats answered")
	time.Sleep(time.Second)
	l := c.GetLock("registered-during-slow-beats")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	require.Zero(t, c.Stats().Reconnects, "a slow heartbeat reconnected the control session")
	select {
	case <-held.Lost():
		t.Fatal("a hold was lost to slow heartbeats answered within its lease")
	default:
	}
	_, err = conn.Exec(ctx(t), `DROP TRIGGER slow_beat ON pgcoord.members`)
	require.NoError(t, err)
	require.Eventually(t, c.IsActive, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, held.Release(ctx(t)))
}
