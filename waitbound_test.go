package pgcoord

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A wait under a ctx with no deadline (Acquire with Wait and
// context.Background) is bounded by a deadline on its wait session's socket
// (see doLocked), as it was by a context per slice before: when the wait
// session's backend stops answering (SIGSTOP of that server process; the
// server is the test's own), Acquire fails within opTimeout of the slice
// that went unanswered, instead of waiting for ever.
func TestWaitBoundedBySocket(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) {
		cfg.ConnString = srv.URL()
		cfg.HeartbeatInterval = 200 * time.Millisecond // opTimeout 5.4 s
	})
	holder := newCoord(t, p, func(cfg *Config) { cfg.ConnString = srv.URL() })
	h := holder.GetLock("x")
	mustAcquire(t, h, NoWait)
	defer func() { _ = h.Release(context.Background()) }()

	type result struct {
		ok   bool
		err  error
		took time.Duration
	}
	got := make(chan result, 1)
	go func() {
		began := time.Now()
		ok, err := c.GetLock("x").Acquire(context.Background(), Wait)
		got <- result{ok, err, time.Since(began)}
	}()
	admin := connect(t, srv.URL())
	var pid int
	require.Eventually(t, func() bool {
		return admin.QueryRow(ctx(t), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted LIMIT 1`).Scan(&pid) == nil
	}, 10*time.Second, 10*time.Millisecond, "the wait is on the server")
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	defer syscall.Kill(pid, syscall.SIGCONT)
	stopped := time.Now()

	select {
	case r := <-got:
		require.Error(t, r.err, "the wait's silent backend fails it")
		require.False(t, r.ok)
		silent := time.Since(stopped)
		t.Logf("Acquire failed %v after the backend stopped (%v in all): %v", silent, r.took, r.err)
		// The unanswered slice was sent at most one slice (1 s) before
		// the stop, and its bound is opTimeout from its send.
		require.Greater(t, silent, c.opTimeout()-waitSlice-200*time.Millisecond, "ended by the bound, not by something else")
	case <-time.After(c.opTimeout() + 5*time.Second):
		t.Fatalf("Acquire still waiting %v after its wait session's backend stopped answering (bound %v)", time.Since(stopped), c.opTimeout())
	}
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
}
