package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Lock semantics 1.
func TestAcquireFreeLock(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("free")
	ok, err := l.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	require.Positive(t, l.Token())
	require.NoError(t, l.Release(ctx(t)))
	require.Zero(t, l.Token())
}

// Lock semantics 2: two Lock objects of one coordinator.
func TestExclusionSameCoordinator(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	a, b := c.GetLock("x"), c.GetLock("x")
	mustAcquire(t, a, NoWait)
	requireBusy(t, b)
	require.NoError(t, a.Release(ctx(t)))
	mustAcquire(t, b, NoWait)
	require.NoError(t, b.Release(ctx(t)))
}

// Lock semantics 2: two coordinators with the same prefix.
func TestExclusionTwoCoordinators(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c1, c2 := newCoord(t, p), newCoord(t, p)
	a, b := c1.GetLock("x"), c2.GetLock("x")
	mustAcquire(t, a, NoWait)
	requireBusy(t, b)
	require.NoError(t, a.Release(ctx(t)))
	mustAcquire(t, b, NoWait)
	requireBusy(t, a)
	require.NoError(t, b.Release(ctx(t)))
}

// Lock semantics 2: goroutines, each with its own Lock, in one critical
// section at a time; two coordinators so that both in-process and server
// exclusion are exercised.
func TestExclusionGoroutines(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	coords := []*Coordinator{newCoord(t, p), newCoord(t, p)}
	var inside, maxInside, entries atomic.Int32
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := coords[g%2].GetLock("shared")
			for range 15 {
				ok, err := l.Acquire(ctx(t), Wait)
				if !ok || err != nil {
					t.Errorf("acquire: %v %v", ok, err)
					return
				}
				n := inside.Add(1)
				for {
					m := maxInside.Load()
					if n <= m || maxInside.CompareAndSwap(m, n) {
						break
					}
				}
				entries.Add(1)
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if err := l.Release(ctx(t)); err != nil {
					t.Errorf("release: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 1, maxInside.Load(), "critical sections overlapped")
	require.EqualValues(t, 8*15, entries.Load())
}

// Lock semantics 2: another OS process.
func TestExclusionAcrossProcesses(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	l := c.GetLock("proc")
	child := startHolder(t, p, "proc")
	requireBusy(t, l)
	_, err := child.stdin.Write([]byte("release\n"))
	require.NoError(t, err)
	child.expect(t, "released")
	mustAcquire(t, l, NoWait)
	require.Greater(t, l.Token(), child.token)
	require.NoError(t, l.Release(ctx(t)))
}

// A holder process killed with SIGKILL frees its lock to a waiter at once.
func TestKilledHolderFreesLockToWaiter(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	child := startHolder(t, p, "victim")
	l := c.GetLock("victim")
	got := make(chan time.Time, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Wait)
		if ok && err == nil {
			got <- time.Now()
		}
		close(got)
	}()
	// Let the waiter reach the server before the kill.
	require.Eventually(t, func() bool { return waiters(t, l.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	killed := time.Now()
	require.NoError(t, child.cmd.Process.Signal(syscall.SIGKILL))
	at, ok := <-got
	require.True(t, ok, "waiter did not get the lock")
	require.Less(t, at.Sub(killed), 2*time.Second, "lock reached the waiter too late")
	require.Greater(t, l.Token(), child.token)
	require.NoError(t, l.Release(ctx(t)))
}

// Lock semantics 3.
func TestNoReentrancy(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("once")
	mustAcquire(t, l, NoWait)
	for _, b := range []Blocking{NoWait, Wait, Timeout(time.Second)} {
		ok, err := l.Acquire(ctx(t), b)
		require.False(t, ok)
		require.ErrorIs(t, err, ErrAlreadyHeld, "%v", b)
	}
	require.NoError(t, l.Release(ctx(t)))
}

// Lock semantics 4.
func TestReleaseNotHeld(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("never")
	require.ErrorIs(t, l.Release(ctx(t)), ErrNotHeld)
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
	require.ErrorIs(t, l.Release(ctx(t)), ErrNotHeld)
}

// Lock semantics 5: a lock that stays busy.
func TestTimeoutExpires(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p).GetLock("t")
	mustAcquire(t, holder, NoWait)
	l := newCoord(t, p).GetLock("t")
	start := time.Now()
	ok, err := l.Acquire(ctx(t), Timeout(300*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 280*time.Millisecond)
	// "About d": generous for a loaded machine; a wait that overran its
	// deadline would go on until the holder left (it never does here).
	require.Less(t, took, 300*time.Millisecond+2*time.Second)
	require.NoError(t, holder.Release(ctx(t)))
}

// Lock semantics 5: a lock that frees up within the timeout is taken as soon
// as it is free, whether the holder is in this process or another.
func TestTimeoutAcquiresWhenFreed(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	local := newCoord(t, p)
	for _, holderCoord := range []*Coordinator{local, newCoord(t, p)} {
		holder := holderCoord.GetLock("t")
		mustAcquire(t, holder, NoWait)
		l := local.GetLock("t")
		res := make(chan bool, 1)
		go func() {
			ok, err := l.Acquire(ctx(t), Timeout(20*time.Second))
			res <- ok && err == nil
		}()
		time.Sleep(100 * time.Millisecond) // let it wait; the release must wake it
		released := time.Now()
		require.NoError(t, holder.Release(ctx(t)))
		require.True(t, <-res)
		require.Less(t, time.Since(released), 5*time.Second)
		require.NoError(t, l.Release(ctx(t)))
	}
}

// Lock semantics 6: cancelling a wait returns promptly and costs no other
// lock of the coordinator its hold.
func TestWaitCancelKeepsOtherHolds(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	other := newCoord(t, p)
	var held []*Lock
	for _, n := range []string{"a", "b", "c", "d"} {
		l := c.GetLock(n)
		mustAcquire(t, l, NoWait)
		held = append(held, l)
	}
	blocker := other.GetLock("busy")
	mustAcquire(t, blocker, NoWait)

	waitCtx, cancel := context.WithCancel(ctx(t))
	l := c.GetLock("busy")
	res := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(waitCtx, Wait)
		if ok {
			err = errors.New("acquired a held lock")
		}
		res <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, l.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	cancelled := time.Now()
	cancel()
	require.ErrorIs(t, <-res, context.Canceled)
	require.Less(t, time.Since(cancelled), time.Second)

	for _, h := range held {
		select {
		case <-h.Lost():
			t.Fatalf("%q lost by a cancelled wait", h.Name())
		default:
		}
		requireBusy(t, other.GetLock(h.Name()))
		require.NoError(t, h.Release(ctx(t)))
	}
	require.NoError(t, blocker.Release(ctx(t)))
}

// Lock semantics 7.
func TestNamesAndPrefixesIndependent(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	mustAcquire(t, c.GetLock("one"), NoWait)
	mustAcquire(t, c.GetLock("two"), NoWait)
	otherPrefix := newCoord(t, p+"other/")
	mustAcquire(t, otherPrefix.GetLock("one"), NoWait)
	require.NotEqual(t, c.GetLock("one").Key(), otherPrefix.GetLock("one").Key())
}

// Lock semantics 8.
func TestStopReleasesEverything(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	other := newCoord(t, p)
	var locks []*Lock
	for _, n := range []string{"s1", "s2", "s3"} {
		l := c.GetLock(n)
		mustAcquire(t, l, NoWait)
		locks = append(locks, l)
	}
	// One lock taken after a wait, so it sits on a wait session.
	blocker := other.GetLock("s4")
	mustAcquire(t, blocker, NoWait)
	waited := c.GetLock("s4")
	acquireAfterWait(t, waited, blocker)
	locks = append(locks, waited)

	require.NoError(t, c.Stop(ctx(t)))
	for _, l := range locks {
		mustAcquire(t, other.GetLock(l.Name()), NoWait)
		requireClosedWithin(t, l.Lost(), 0, "Lost after Stop")
		require.Zero(t, l.Token(), "no token once the hold ended with Stop")
		require.ErrorIs(t, l.Release(ctx(t)), ErrLockLost)
	}
	ok, err := c.GetLock("s1").Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrNotStarted)
	require.NoError(t, c.Stop(ctx(t)), "Stop is idempotent")
}

// Lock semantics 9: a killed session closes Lost within two heartbeat
// intervals; Release then says so, and the coordinator recovers.
func TestTerminatedSessionLosesLock(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	hb := c.cfg.HeartbeatInterval
	l := c.GetLock("doomed")
	mustAcquire(t, l, NoWait)
	pid := heldBy(t, l.Key())
	require.NotZero(t, pid)
	var ok bool
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
	require.True(t, ok)
	killed := time.Now()
	requireClosedWithin(t, l.Lost(), 5*time.Second, "Lost")
	require.Less(t, time.Since(killed), 2*hb+100*time.Millisecond, "loss signalled later than two heartbeats")
	require.ErrorIs(t, l.Release(ctx(t)), ErrLockLost)

	// Recovered: the same name (on the redialled session) and others work.
	mustAcquire(t, l, NoWait)
	requireBusy(t, newCoord(t, p).GetLock("doomed"))
	require.NoError(t, l.Release(ctx(t)))
	require.True(t, c.IsActive())
}

// Lost() and Token() follow the hold: a channel taken before Acquire is the
// hold's and closes when it is lost; a lost hold has no token; a released
// hold's channel stays open and the next hold gets a new one.
func TestLostAndTokenFollowTheHold(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("watched")
	require.Zero(t, l.Token(), "no token before Acquire")
	early := l.Lost()
	mustAcquire(t, l, NoWait)
	require.Equal(t, early, l.Lost(), "the channel taken before Acquire is the hold's")
	require.NotZero(t, l.Token())

	var ok bool
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, l.Key())).Scan(&ok))
	require.True(t, ok)
	requireClosedWithin(t, early, 5*time.Second, "Lost taken before Acquire")
	require.Zero(t, l.Token(), "no token once the hold is lost")
	requireClosedWithin(t, l.Lost(), 0, "Lost after the loss, before Release")
	require.ErrorIs(t, l.Release(ctx(t)), ErrLockLost)
	require.Zero(t, l.Token())

	next := l.Lost()
	require.False(t, isClosed(next), "after Release, Lost is the next hold's channel")
	mustAcquire(t, l, NoWait)
	require.Equal(t, next, l.Lost())
	require.NotZero(t, l.Token())
	require.NoError(t, l.Release(ctx(t)))
	require.False(t, isClosed(next), "a normal Release does not close Lost")
	require.NotEqual(t, next, l.Lost(), "a new channel for the next hold")

	// A lost hold replaced by Acquire without Release: the new hold's
	// channel is fresh, not the closed one.
	mustAcquire(t, l, NoWait)
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, l.Key())).Scan(&ok))
	requireClosedWithin(t, l.Lost(), 5*time.Second, "Lost")
	mustAcquire(t, l, NoWait)
	require.False(t, isClosed(l.Lost()), "the new hold's channel is open")
	require.NotZero(t, l.Token())
	require.NoError(t, l.Release(ctx(t)))
}

// Lock semantics 10.
func TestTokensIncreaseAcrossHolders(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	coords := []*Coordinator{newCoord(t, p), newCoord(t, p), newCoord(t, p)}
	var last int64
	for i := range 30 {
		l := coords[i%3].GetLock("fenced")
		b := NoWait
		if i%2 == 1 {
			b = Wait
		}
		mustAcquire(t, l, b)
		require.Greater(t, l.Token(), last)
		last = l.Token()
		require.NoError(t, l.Release(ctx(t)))
	}
}

func TestAcquireBeforeStartAndAfterStop(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL, Prefix: testPrefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	ok, err := c.GetLock("x").Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrNotStarted)
	require.NoError(t, c.Stop(ctx(t)))
	require.ErrorIs(t, c.Start(ctx(t)), ErrNotStarted, "Start after Stop")
}

func TestReleaseWithCancelledContextStillReleases(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	l := newCoord(t, p).GetLock("r")
	mustAcquire(t, l, NoWait)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, l.Release(cancelled))
	mustAcquire(t, newCoord(t, p).GetLock("r"), NoWait)
}

// A holder that saw Lost() and at once released, or acquired again without
// releasing, gets its name back: the in-process claim of the lost hold is
// freed only after the loss callbacks ran (here one held back on purpose),
// and Release and Acquire wait for that instead of finding the name busy.
func TestReacquireRightAfterLoss(t *testing.T) {
	t.Parallel()
	for _, release := range []bool{true, false} {
		t.Run(fmt.Sprintf("release=%v", release), func(t *testing.T) {
			c := newCoord(t, testPrefix(t))
			l := c.GetLock("again")
			mustAcquire(t, l, NoWait)
			l.mu.Lock()
			h := l.hold
			l.mu.Unlock()
			gate := make(chan struct{})
			c.onLoss(h, func(error) { <-gate })
			var ok bool
			require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, h.sess.backendPID).Scan(&ok))
			require.True(t, ok)
			requireClosedWithin(t, l.Lost(), 5*time.Second, "Lost")
			go func() {
				time.Sleep(100 * time.Millisecond)
				close(gate)
			}()
			if release {
				require.ErrorIs(t, l.Release(ctx(t)), ErrLockLost)
			}
			mustAcquire(t, l, NoWait)
			require.NoError(t, l.Release(ctx(t)))
		})
	}
}
