package chaostest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

// A holder cut off without a FIN learns of the loss within two heartbeats,
// and before the server (idle_session_timeout) lets anyone else take the
// lock.
func TestCutOffHolderToldBeforeTakeover(t *testing.T) {
	t.Parallel()
	proxy, u := proxiedTestURL(t)
	proxied := u.String()
	p := testPrefix(t)
	const hb = 200 * time.Millisecond
	holder := newCoord(t, p, func(cfg *pgcoord.Config) {
		cfg.ConnString = proxied
		cfg.HeartbeatInterval = hb
		cfg.SessionTimeout = 5 * hb
	})
	l := holder.GetLock("partitioned")
	mustAcquire(t, l, pgcoord.NoWait)

	other := newCoord(t, p)
	w := other.GetLock("partitioned")
	taken := make(chan time.Time, 1)
	go func() {
		ok, err := w.Acquire(ctx(t), pgcoord.Timeout(20*time.Second))
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
