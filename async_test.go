package pgcoord

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// With AsyncRelease, Release returns before the server has the unlock, yet
// the lock is soon free for other processes, at once for this one, tokens
// still increase, and nothing stays held.
func TestAsyncRelease(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.AsyncRelease = true })
	other := newCoord(t, p)
	l, o := c.GetLock("async"), other.GetLock("async")

	var last int64
	for range 200 {
		mustAcquire(t, l, NoWait)
		require.Greater(t, l.Token(), last)
		last = l.Token()
		require.NoError(t, l.Release(ctx(t)))
	}
	require.ErrorIs(t, l.Release(ctx(t)), ErrNotHeld)

	// Another process gets it within the flush delay plus a round trip.
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
	require.Eventually(t, func() bool {
		ok, err := o.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		return ok
	}, 5*time.Second, time.Millisecond)
	require.Greater(t, o.Token(), last)
	require.NoError(t, o.Release(ctx(t)))

	// A waiter elsewhere is woken by an async unlock that no statement took
	// along: the flush sends it on its own.
	mustAcquire(t, l, NoWait)
	got := make(chan error, 1)
	go func() {
		ok, err := o.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = ErrLockAcquireFailed
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, l.Key()) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, l.Release(ctx(t)))
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not woken by an async release")
	}
	require.NoError(t, o.Release(ctx(t)))

	require.Eventually(t, func() bool { return serverLocksOf(t, testURL, c.MemberID()) == 0 },
		5*time.Second, 10*time.Millisecond)
	require.Zero(t, c.Stats().Held)
}

// An async unlock still queued when its session dies is harmless: the
// session's other holds are reported lost, nothing stays held on the server,
// and the name can be taken again at once. The released hold is reported
// lost too, late: its unlock found the lock gone, which is all a
// synchronous Release would have known.
func TestAsyncReleaseSessionDies(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) {
		cfg.AsyncRelease = true
	})
	a, b := c.GetLock("async-a"), c.GetLock("async-b")
	mustAcquire(t, a, NoWait)
	mustAcquire(t, b, NoWait)
	pid := heldBy(t, b.Key())
	require.NotZero(t, pid)

	// Hold the session so that a's unlock cannot go out before the session
	// dies.
	s := c.lockSs[0]
	s.sem <- struct{}{}
	require.NoError(t, a.Release(ctx(t)))
	var ok bool
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1, 5000)`, pid).Scan(&ok))
	require.True(t, ok)
	<-s.sem

	lostA := a.Lost()
	requireClosedWithin(t, b.Lost(), 5*time.Second, "b's loss")
	requireClosedWithin(t, lostA, 5*time.Second, "a's late loss")
	mustAcquire(t, a, NoWait)
	require.NotEqual(t, pid, heldBy(t, a.Key()), "a is held by the dead session")
	require.NoError(t, a.Release(ctx(t)))
	require.ErrorIs(t, b.Release(ctx(t)), ErrLockLost)
	require.Eventually(t, func() bool { return serverLocksOf(t, testURL, c.MemberID()) == 0 },
		5*time.Second, 10*time.Millisecond)
}

// A hold released under AsyncRelease whose unlock was still queued when its
// session broke is told of the loss when the break is found, with the
// session's other holds, not once the unlock has run on the next connection
// (which first waits for the old backend to exit, up to a second: here it
// cannot exit, being frozen). The server is the test's own: it signals a
// server process.
func TestAsyncReleaseToldAtBreak(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		cfg.AsyncRelease = true
	})
	a, b := c.GetLock("async-a"), c.GetLock("async-b")
	mustAcquire(t, a, NoWait)
	mustAcquire(t, b, NoWait)
	s := c.lockSs[0]
	pid := int(s.backendPID)

	s.sem <- struct{}{} // a's unlock stays queued
	require.NoError(t, a.Release(ctx(t)))
	lostA := a.Lost()
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	defer syscall.Kill(pid, syscall.SIGCONT)
	s.forceClose(0)
	<-s.sem // the queued unlock goes out, finds the connection broken

	requireClosedWithin(t, b.Lost(), 5*time.Second, "b's loss")
	toldB := time.Now()
	requireClosedWithin(t, lostA, 5*time.Second, "a's late loss")
	require.Less(t, time.Since(toldB), awaitGoneMax/2, "a was told only after the next connection waited for the old backend")
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	require.ErrorIs(t, b.Release(ctx(t)), ErrLockLost)
}

// TestAsyncReleaseStreamFlushes: under AsyncRelease, an unlock queued
// behind another (no try between them to take them along) leaves the
// flush's timer as the first set it, so the first goes within
// asyncReleaseDelay of its Release. Before, each queued unlock pushed the
// timer back: under a steady stream of releases closer than the delay
// (a job releasing the names it took, one by one), the first name stayed
// held on the server, for nobody, until the stream paused: 30-40 ms
// behind a stream of 2,000 releases 100 µs apart, in a helper's run.
// (Found by a review helper.) Pairs of releases in a row: whenever the
// first's unlock is still queued after the second's, the timer must not
// have moved.
func TestAsyncReleaseStreamFlushes(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.AsyncRelease = true })
	locks := make([]*Lock, 40)
	for i := range locks {
		locks[i] = c.GetLock(fmt.Sprintf("stream-%d", i))
		mustAcquire(t, locks[i], NoWait)
	}
	s := c.lockSession(locks[0].Key())
	look := func(op *lockOp) (queued bool, armed int64) {
		s.bmu.Lock()
		defer s.bmu.Unlock()
		return slices.Contains(s.batch.queue, op), s.batch.flushArmed
	}
	checked := 0
	for i := 0; i+1 < len(locks); i += 2 {
		first, second := locks[i], locks[i+1]
		first.mu.Lock()
		op := &first.hold.op
		first.mu.Unlock()
		require.NoError(t, first.Release(ctx(t)))
		_, armed := look(op)
		require.NoError(t, second.Release(ctx(t)))
		if queued, again := look(op); queued {
			require.Equal(t, armed, again, "the second unlock moved the timer of the first's")
			checked++
		}
	}
	t.Logf("%d pairs checked", checked)
	require.Positive(t, checked, "no second unlock was queued behind a first")
	require.Eventually(t, func() bool { return heldBy(t, locks[len(locks)-1].Key()) == 0 },
		5*time.Second, time.Millisecond, "every unlock sent")
}
