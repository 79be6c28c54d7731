package pgcoord

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// Stop called while Start is still under way (here Start waits for another
// process's schema creation) honours its ctx: it does not wait for Start to
// end by itself, and the Start gives up.
func TestStopDuringStartHonoursDeadline(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	other := connect(t, dbURL)
	_, err := other.Exec(ctx(t), `SELECT pg_advisory_lock($1)`, hash.Key("pgcoord\x00create-schema"))
	require.NoError(t, err)
	defer func() { _, _ = other.Exec(context.Background(), `SELECT pg_advisory_unlock_all()`) }()

	c, err := New(Config{ConnString: dbURL, Logger: quietLogger()})
	require.NoError(t, err)
	started := make(chan error, 1)
	go func() { started <- c.Start(ctx(t)) }()
	// Start is waiting for the schema lock.
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, other.QueryRow(ctx(t),
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n))
		return n > 0
	}, 10*time.Second, 10*time.Millisecond)

	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	began := time.Now()
	_ = c.Stop(sctx)
	took := time.Since(began)
	require.Less(t, took, 3*time.Second, "Stop waited for Start instead of honouring its 1s ctx")
	select {
	case err := <-started:
		require.Error(t, err, "Start gave up for Stop")
	case <-time.After(5 * time.Second):
		t.Fatal("Start still running 5s after Stop returned")
	}
	require.False(t, c.IsActive())
	require.Eventually(t, func() bool { return backendsOf(t, c) == 0 }, 5*time.Second, 10*time.Millisecond)
}

// Heartbeat may be called from any goroutine at any time, Start's included.
func TestHeartbeatConcurrentWithStart(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL, Prefix: testPrefix(t), SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			hctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			_ = c.Heartbeat(hctx)
			cancel()
		}
	}()
	require.NoError(t, c.Start(ctx(t)))
	time.Sleep(50 * time.Millisecond)
	close(done)
	<-stopped
	require.NoError(t, c.Stop(ctx(t)))
}

// A reconnect backoff of centuries (math.MaxInt64: "never, in practice")
// is accepted by New; its waits must stay waits, not turn negative in the
// jitter's overflow, which would make the reconnect try without pause.
func TestReconnectBackoffHugeBoundsNeverNegative(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL, InitialReconnectBackoff: math.MaxInt64, MaxReconnectBackoff: math.MaxInt64})
	require.NoError(t, err)
	bo := c.reconnectBackoff()
	for i := range 40 {
		d := bo.NextBackOff()
		require.GreaterOrEqual(t, d, time.Duration(math.MaxInt64)/2, "wait %d", i)
	}
}
