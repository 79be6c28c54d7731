package pgcoord

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A try's grant read after the lease ran out is not a hold: the process
// was frozen (here: held in the hook, as SIGSTOP would) between the
// server's reply and its read, for longer than SessionTimeout, so the server
// ended the idle lock session and another member took the lock. A wait's
// grant that old is given back (waitOn); a try's was recorded, on a
// session that had no holds for the lease's expiry to end, and Acquire
// returned true while the other member held the lock.
//
// Not parallel: testHookAddHold is one for the package.
func TestStaleTryGrantNotHeld(t *testing.T) {
	p := testPrefix(t)
	short := func(cfg *Config) { cfg.HeartbeatInterval = 200 * time.Millisecond; cfg.SessionTimeout = time.Second }
	c, other := newCoord(t, p, short), newCoord(t, p, short)
	l := c.GetLock("stale")
	// Register the name, and warm the session, before the hook is set.
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	s := c.lockSession(l.Key())
	theirs := other.GetLock("stale")
	var fired atomic.Bool
	var took atomic.Bool
	hook := func(hs *session) {
		if hs != s || !fired.CompareAndSwap(false, true) {
			return
		}
		// Frozen past SessionTimeout: the server ends the idle session.
		took.Store(frozenUntilTaken(s.backendPID, theirs))
	}
	testHookAddHold.Store(&hook)
	defer testHookAddHold.Store(nil)

	ok, err := l.Acquire(ctx(t), NoWait)
	require.True(t, fired.Load(), "the hook never ran")
	require.True(t, took.Load(), "the other member did not get the lock once the server ended the session")
	require.NoError(t, err)
	require.False(t, ok, "Acquire reported the lock held while another member holds it (token %d, theirs %d)", l.Token(), theirs.Token())
	require.NoError(t, theirs.Release(ctx(t)))
}

// A wait's grant read after the lease ran out is not a hold either: the
// process frozen (held in the hook) after waitOn's own look at the grant's
// age and before the hold is recorded, until the server ended the idle wait
// session and another member took the lock. Before, the hold was recorded
// and Acquire returned true; and once addHold refused such a grant, the
// wait's rerun on a new connection, timed out with the lock busy, still
// returned true: the refused grant's token was left on the hold.
//
// Not parallel: testHookAddHold is one for the package.
func TestStaleWaitGrantNotHeld(t *testing.T) {
	p := testPrefix(t)
	short := func(cfg *Config) { cfg.HeartbeatInterval = 200 * time.Millisecond; cfg.SessionTimeout = time.Second }
	c, other := newCoord(t, p, short), newCoord(t, p, short)
	l := c.GetLock("stalewait")
	theirs := other.GetLock("stalewait")
	mustAcquire(t, l, NoWait) // registers the name
	require.NoError(t, l.Release(ctx(t)))
	mustAcquire(t, theirs, NoWait)

	var fired, took atomic.Bool
	hook := func(hs *session) {
		if hs.kind != sessionWait || !fired.CompareAndSwap(false, true) {
			return
		}
		took.Store(frozenUntilTaken(hs.backendPID, theirs))
	}
	testHookAddHold.Store(&hook)
	defer testHookAddHold.Store(nil)

	res := make(chan bool, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Timeout(4*time.Second))
		res <- ok && err == nil
	}()
	require.Eventually(t, func() bool { return waiters(t, l.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, theirs.Release(ctx(t)))
	ok := <-res
	require.True(t, fired.Load(), "the hook never ran")
	require.True(t, took.Load(), "the other member did not get the lock once the server ended the session")
	require.False(t, ok, "Acquire reported the lock held while another member holds it (token %d, theirs %d)", l.Token(), theirs.Token())
	require.NoError(t, theirs.Release(ctx(t)))
}

// frozenUntilTaken is a process frozen between a grant and its record, as
// testHookAddHold runs it: it returns once the server has ended backend
// pid (idle past SessionTimeout; at most 10 s) and another member, through
// theirs, has tried the lock, reporting whether that member took it.
func frozenUntilTaken(pid int32, theirs *Lock) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		_ = testPool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n)
		if n == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ok, err := theirs.Acquire(context.Background(), NoWait)
	return ok && err == nil
}
