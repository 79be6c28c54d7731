package pgcoord

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A frozen holder (SIGSTOP: a long GC pause, a stopped VM) keeps its locks
// only until the server's idle_session_timeout (SessionTimeout) ends its
// sessions; a waiter then gets the lock, and the holder, once it runs again,
// is told it lost it.
func TestFrozenHolderLosesLockAfterSessionTimeout(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	child := startHolder(t, p, "frozen") // HeartbeatInterval 200ms: SessionTimeout 1.4s
	l := c.GetLock("frozen")
	got := make(chan bool, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Timeout(20*time.Second))
		got <- ok && err == nil
	}()
	require.Eventually(t, func() bool { return waiters(t, l.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, child.cmd.Process.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	require.True(t, <-got, "the waiter never got the frozen holder's lock")
	require.Less(t, time.Since(stopped), 5*time.Second)
	require.GreaterOrEqual(t, time.Since(stopped), 800*time.Millisecond, "taken before SessionTimeout")
	require.Greater(t, l.Token(), child.token)

	require.NoError(t, child.cmd.Process.Signal(syscall.SIGCONT))
	child.expect(t, "lost")
	require.NoError(t, l.Release(ctx(t)))
}

// The holder's lease: a lock session not heard from for SessionTimeout less
// one heartbeat has its holds reported lost, even while a statement on it
// still hangs (the server may free them any moment).
func TestLeaseExpiryReportsLoss(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.HeartbeatInterval = 200 * time.Millisecond; cfg.SessionTimeout = time.Second })
	l := c.GetLock("leased")
	mustAcquire(t, l, NoWait)
	s := c.lockSs[uint64(l.Key())%uint64(len(c.lockSs))]
	// Pretend the session went silent long ago, and keep it busy so the
	// heartbeat cannot ping it.
	require.NoError(t, s.lock(ctx(t)))
	s.heard.Store(monoNow() - int64(c.cfg.SessionTimeout))
	requireClosedWithin(t, l.Lost(), 2*c.cfg.HeartbeatInterval+time.Second, "Lost at lease expiry")
	s.unlock()
	require.ErrorIs(t, l.Release(ctx(t)), ErrLockLost)
}

// Lock and idle wait sessions stay open across many SessionTimeouts: the
// heartbeat keeps them from the server's idle_session_timeout.
func TestIdleSessionsSurviveSessionTimeout(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	short := func(cfg *Config) { cfg.HeartbeatInterval = 200 * time.Millisecond; cfg.SessionTimeout = time.Second }
	c, other := newCoord(t, p, short), newCoord(t, p, short)
	held := c.GetLock("kept")
	mustAcquire(t, held, NoWait)
	// Leave a wait session idle in the pool.
	blocker := other.GetLock("w")
	mustAcquire(t, blocker, NoWait)
	w := c.GetLock("w")
	acquireAfterWait(t, w, blocker)
	require.NoError(t, w.Release(ctx(t)))

	time.Sleep(3 * c.cfg.SessionTimeout)
	select {
	case <-held.Lost():
		t.Fatal("an idle lock session was timed out")
	default:
	}
	require.NoError(t, held.Release(ctx(t)))
	// The pooled wait session still works for the next wait.
	mustAcquire(t, blocker, NoWait)
	acquireAfterWait(t, w, blocker)
	require.NoError(t, w.Release(ctx(t)))
}

func TestServerMajor(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]int{"15.18 (Debian 15.18-0+deb12u1)": 15, "14beta1": 14, "9.6.24": 9, "": 0, "x": 0} {
		require.Equal(t, want, serverMajor(v), v)
	}
}

// No hold is added to a connection whose lease ran out while the try that
// took the lock was under way (the heartbeat found it silent and is closing
// its socket): the try runs again on a new connection, and the hold it
// reports is one the server really has. The hook makes the lease run out at
// exactly that point.
func TestNoHoldAddedPastLease(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	a := c.GetLock("a")
	mustAcquire(t, a, NoWait)
	s := c.lockSs[0]
	oldPID := s.backendPID
	var fired atomic.Bool
	hook := func(hs *session) {
		if hs == s && fired.CompareAndSwap(false, true) {
			s.expire(s.gen.Load())
		}
	}
	testHookAddHold.Store(&hook)
	defer testHookAddHold.Store(nil)

	b := c.GetLock("b")
	mustAcquire(t, b, NoWait)
	require.True(t, fired.Load(), "the hook never ran")
	require.True(t, isClosed(a.Lost()), "the expired connection's holds are lost")
	require.NotZero(t, b.Token())
	require.NotEqual(t, oldPID, s.backendPID, "b is held on the expired connection")
	require.Equal(t, s.backendPID, heldBy(t, b.Key()), "b is reported held but the server does not hold it there")
	require.NoError(t, b.Release(ctx(t)))
	require.ErrorIs(t, a.Release(ctx(t)), ErrLockLost)
}

// A busy lock session is never taken for a silent one: 64 goroutines
// hammering one lock session with a 50 ms heartbeat (and the default
// SessionTimeout that goes with it) for 30 s lose nothing.
func TestBusySessionKeepsLeases(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.HeartbeatInterval = 50 * time.Millisecond
		cfg.SessionTimeout = 0 // the default for that heartbeat
	})
	require.Equal(t, 1100*time.Millisecond, c.cfg.SessionTimeout)
	end := time.Now().Add(30 * time.Second)
	var holds, lost atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			l := c.GetLock(fmt.Sprintf("busy-%d", g))
			for time.Now().Before(end) {
				ok, err := l.Acquire(context.Background(), NoWait)
				if err != nil || !ok {
					t.Errorf("acquire %q: %v %v", l.Name(), ok, err)
					return
				}
				holds.Add(1)
				if isClosed(l.Lost()) {
					lost.Add(1)
				}
				if err := l.Release(context.Background()); err != nil {
					lost.Add(1)
					t.Errorf("release %q: %v", l.Name(), err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d holds in 30s on one lock session", holds.Load())
	require.Zero(t, lost.Load())
	require.Zero(t, c.Stats().Lost)
}

// TestRefusedStatementsKeepLease: a lock session kept busy by statements
// the server refuses (here every try fails: the fencing sequence is at its
// maximum; a full lock table does the same) is heard from by each refusal,
// which proves it alive after its send. Before, only statements that
// succeeded counted, and the check leaves a busy session alone: the lease
// ran out with the server answering, and the session's holds were reported
// lost. (Found by a review helper.)
func TestRefusedStatementsKeepLease(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil) // the sequence at its maximum is this server's only
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		cfg.HeartbeatInterval = 50 * time.Millisecond
		cfg.SessionTimeout = 0 // the default for that heartbeat: a lease of 1 s
	})
	held := c.GetLock("refused-held")
	tries := make([]*Lock, 8)
	for i := range tries {
		tries[i] = c.GetLock(fmt.Sprintf("refused-%d", i))
		mustAcquire(t, tries[i], NoWait) // registered before the sequence stops
		require.NoError(t, tries[i].Release(ctx(t)))
	}
	mustAcquire(t, held, NoWait)
	_, err := connect(t, srv.URL()).Exec(ctx(t), `DO $$ BEGIN
		EXECUTE format('ALTER SEQUENCE pgcoord.fencing_token MAXVALUE %s', (SELECT last_value FROM pgcoord.fencing_token));
	END $$`)
	require.NoError(t, err)
	end := time.Now().Add(3 * c.lease())
	var refused atomic.Int64
	var wg sync.WaitGroup
	for _, l := range tries {
		wg.Go(func() {
			for time.Now().Before(end) && !isClosed(held.Lost()) {
				ok, err := l.Acquire(context.Background(), NoWait)
				if ok {
					t.Errorf("acquired %q with the sequence at its maximum", l.Name())
					return
				}
				if err != nil {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d tries refused in %v", refused.Load(), 3*c.lease())
	require.Positive(t, refused.Load())
	require.False(t, isClosed(held.Lost()), "the session's hold was reported lost while the server answered")
	require.Zero(t, c.Stats().Lost)
	require.NoError(t, held.Release(ctx(t)))
}
