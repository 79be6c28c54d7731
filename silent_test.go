package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// signalBackend sends sig (STOP, CONT) to a server backend process: the
// tests run as root, or as the server's own user.
func signalBackend(t *testing.T, pid int32, sig string) {
	t.Helper()
	out, err := exec.Command("kill", "-"+sig, fmt.Sprint(pid)).CombinedOutput()
	require.NoError(t, err, "kill -%s %d: %s", sig, pid, out)
}

// An Acquire whose ctx ends while its try waits on a lock session whose
// server has gone silent (its backend frozen) returns ctx.Err() promptly;
// the try, answered once the backend runs again, gives its lock back; and
// the session's other holds are untouched.
func TestAcquireHonoursCtxOnSilentLockSession(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	kept := c.GetLock("kept")
	mustAcquire(t, kept, NoWait)
	s := c.lockSession(kept.Key())
	// A name on the same lock session, registered first (the registry is
	// on the control session, which stays awake).
	var probe *Lock
	for i := 0; probe == nil; i++ {
		if l := c.GetLock(fmt.Sprintf("probe-%d", i)); c.lockSession(l.Key()) == s {
			probe = l
		}
	}
	require.NoError(t, c.register(ctx(t), probe))
	require.NoError(t, s.lock(ctx(t)))
	pid := s.backendPID
	s.unlock()

	signalBackend(t, pid, "STOP")
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			signalBackend(t, pid, "CONT")
		}
	}
	t.Cleanup(resume)
	// On a build that ignores ctx, the try would block until the resume.
	safety := time.AfterFunc(3*time.Second, func() { _ = exec.Command("kill", "-CONT", fmt.Sprint(pid)).Run() })
	defer safety.Stop()

	actx, cancel := context.WithTimeout(ctx(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	ok, err := probe.Acquire(actx, NoWait)
	took := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, ok)
	require.Less(t, took, time.Second, "Acquire with a 100ms deadline took %v against a silent lock session", took)
	t.Logf("Acquire with a 100ms deadline returned after %v", took)
	resume()

	// The abandoned try is answered now; the lock it took is given back.
	ol := other.GetLock(probe.Name())
	require.Eventually(t, func() bool {
		ok, err := ol.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		return ok
	}, 10*time.Second, 20*time.Millisecond, "the abandoned try's lock is given back")
	require.NoError(t, ol.Release(ctx(t)))
	require.False(t, isClosed(kept.Lost()), "the session's other hold is untouched")
	require.NoError(t, kept.Release(ctx(t)))
	require.Zero(t, c.Stats().Held)
	// And the probe can be taken again by its own Lock.
	mustAcquire(t, probe, NoWait)
	require.NoError(t, probe.Release(ctx(t)))
}

// Many tries on one lock session whose callers give up at random moments
// (before the batch is sent, while it runs, as it is handed the lead):
// every Acquire returns, nothing leaks (each name is free for another
// member afterwards, and no hold is left counted), and the session's other
// holds are untouched.
func TestAbandonedTriesLeakNothing(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	kept := c.GetLock("kept")
	mustAcquire(t, kept, NoWait)
	const workers, rounds = 8, 40
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for r := range rounds {
				l := c.GetLock(fmt.Sprintf("n-%d-%d", w, r%4))
				actx, cancel := context.WithTimeout(ctx(t), time.Duration(r%5)*150*time.Microsecond)
				ok, err := l.Acquire(actx, NoWait)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					errs <- fmt.Errorf("acquire: %w", err)
					return
				}
				if ok {
					if err := l.Release(ctx(t)); err != nil {
						errs <- fmt.Errorf("release: %w", err)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		require.NoError(t, <-errs)
	}
	require.Eventually(t, func() bool { return c.Stats().Held == 1 }, 10*time.Second, 10*time.Millisecond, "only kept is held")
	for w := range workers {
		for r := range 4 {
			ol := other.GetLock(fmt.Sprintf("n-%d-%d", w, r))
			require.Eventually(t, func() bool {
				ok, err := ol.Acquire(ctx(t), NoWait)
				require.NoError(t, err)
				return ok
			}, 10*time.Second, 10*time.Millisecond, "%s is free", ol.Name())
			require.NoError(t, ol.Release(ctx(t)))
		}
	}
	require.False(t, isClosed(kept.Lost()))
	require.NoError(t, kept.Release(ctx(t)))
}
