package pgcoord

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A holder cut off without a FIN learns of the loss within two heartbeats,
// and before the server (idle_session_timeout) lets anyone else take the
// lock.
func TestCutOffHolderToldBeforeTakeover(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	proxy := startChaosProxy(t, u.Host)
	t.Cleanup(proxy.close)
	u.Host = proxy.addr()
	proxied := u.String()
	p := testPrefix(t)
	const hb = 200 * time.Millisecond
	holder := newCoord(t, p, func(cfg *Config) {
		cfg.ConnString = proxied
		cfg.HeartbeatInterval = hb
		cfg.SessionTimeout = 5 * hb
	})
	l := holder.GetLock("partitioned")
	mustAcquire(t, l, NoWait)

	other := newCoord(t, p)
	w := other.GetLock("partitioned")
	taken := make(chan time.Time, 1)
	go func() {
		ok, err := w.Acquire(ctx(t), Timeout(20*time.Second))
		if ok && err == nil {
			taken <- time.Now()
		}
		close(taken)
	}()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)

	proxy.partition()
	cut := time.Now()
	var told time.Time
	select {
	case <-l.Lost():
		told = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the cut-off holder was never told")
	}
	require.Less(t, told.Sub(cut), 2*hb+300*time.Millisecond, "told later than two heartbeats")
	at, ok := <-taken
	require.True(t, ok, "the server never freed the cut-off holder's lock")
	require.True(t, told.Before(at), "someone else took the lock before the holder was told")
	require.NoError(t, w.Release(ctx(t)))
	require.False(t, holder.IsActive())
	// End the partition before the holder's Stop: pgx's background close of
	// its broken connections sends cancel requests through the proxy.
	// Stop cannot mark the member stopped (its server is out of reach), but
	// it returns, and leaves nothing running.
	proxy.close()
	_ = holder.Stop(ctx(t))
}

// A waiter does not hold a snapshot open for long: CREATE INDEX
// CONCURRENTLY, which waits for every older snapshot, finishes while a
// coordinator waits for a busy lock.
func TestWaiterDoesNotBlockCreateIndexConcurrently(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	blocker := other.GetLock("long")
	mustAcquire(t, blocker, NoWait)
	w := c.GetLock("long")
	res := make(chan bool, 1)
	go func() { ok, _ := w.Acquire(ctx(t), Wait); res <- ok }()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)

	table := "cic_" + randomSuffix()
	_, err := testPool.Exec(ctx(t), `CREATE TABLE `+table+` (id int)`)
	require.NoError(t, err)
	defer testPool.Exec(ctx(t), `DROP TABLE `+table)
	conn := connect(t, testURL)
	_, err = conn.Exec(ctx(t), `SET statement_timeout = '15s'`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx(t), `CREATE INDEX CONCURRENTLY ON `+table+` (id)`)
	require.NoError(t, err, "CREATE INDEX CONCURRENTLY was blocked by the waiter")
	// Still waiting (between two slices there may be a moment without).
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, blocker.Release(ctx(t)))
	require.True(t, <-res)
	require.NoError(t, w.Release(ctx(t)))
}
