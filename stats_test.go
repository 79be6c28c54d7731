package pgcoord

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStatsCount(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	var observed []time.Duration
	var omu sync.Mutex
	unregister := c.OnWait(func(d time.Duration) { omu.Lock(); observed = append(observed, d); omu.Unlock() })
	defer unregister()
	a := c.GetLock("a")
	mustAcquire(t, a, NoWait)
	s := c.Stats()
	require.Equal(t, Stats{Held: 1, Acquired: 1, Active: true, WaitBuckets: make([]uint64, len(WaitBucketBounds()))},
		Stats{Held: s.Held, Acquired: s.Acquired, Active: s.Active, WaitBuckets: s.WaitBuckets, Busy: s.Busy, Waited: s.Waited, Lost: s.Lost})
	require.GreaterOrEqual(t, s.Sessions, 2, "control and lock session")
	require.Less(t, s.HeartbeatAge, 3*c.cfg.HeartbeatInterval)

	blocker := other.GetLock("b")
	mustAcquire(t, blocker, NoWait)
	requireBusy(t, c.GetLock("b"))
	ok, err := c.GetLock("b").Acquire(ctx(t), Timeout(50*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)
	w := c.GetLock("b")
	acquireAfterWait(t, w, blocker)

	// Lose a: kill its session.
	_, err = testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, a.Key()))
	require.NoError(t, err)
	requireClosedWithin(t, a.Lost(), 5*time.Second, "Lost")

	s = c.Stats()
	require.EqualValues(t, 1, s.Held, "b is held")
	require.EqualValues(t, 2, s.Acquired)
	require.EqualValues(t, 2, s.Busy)
	require.EqualValues(t, 2, s.Waited, "the timed-out wait and the successful one")
	require.Greater(t, s.WaitTime, 50*time.Millisecond)
	require.EqualValues(t, 1, s.Lost)
	require.Equal(t, s.Waited, s.WaitBuckets[len(s.WaitBuckets)-1], "every wait is under the last bound")
	require.Equal(t, 25*time.Millisecond, WaitBucketBounds()[4])
	require.LessOrEqual(t, s.WaitBuckets[4], uint64(1), "the timed-out wait took 50ms or more: above the 25ms bucket")
	omu.Lock()
	require.Len(t, observed, 2, "OnWait saw both waits")
	require.GreaterOrEqual(t, observed[0]+observed[1], 50*time.Millisecond)
	omu.Unlock()
	require.NoError(t, w.Release(ctx(t)))
	require.Zero(t, c.Stats().Held)
}

// No bucket of WaitBuckets exceeds Waited, the +Inf bucket, even when
// waits end while Stats reads them: a Prometheus histogram whose le="300"
// bucket is above its count is malformed (histogram_quantile reads it as
// non-monotonic). Before, Stats read Waited first, and a wait ending
// between the two reads showed in a bucket only (454 of 20000 reads).
func TestStatsBucketsNeverAboveWaited(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					c.observeWait(time.Microsecond)
				}
			}
		}()
	}
	defer wg.Wait()
	defer close(stop)
	for i := range 20000 {
		s := c.Stats()
		if top := s.WaitBuckets[len(s.WaitBuckets)-1]; top > s.Waited {
			t.Fatalf("read %d: the 5m bucket counts %d waits, Waited (+Inf) only %d", i, top, s.Waited)
		}
	}
}

// TestWaitBeyondBudgetCountsOnce: Stats.WaitsBeyondBudget counts waits, as
// its doc says, not the phases of one: a wait beyond the budget that
// outlasts its first queueAfter (100 ms) went on with a ticket in a
// second waitFar, and was counted twice (WaitsBeyondBudget 2, Waited 1).
func TestWaitBeyondBudgetCountsOnce(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p).GetLock("far")
	mustAcquire(t, holder, NoWait)
	// MaxSessions 2: the control session and the lock session, no wait
	// session, so every wait is beyond the budget.
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	ok, err := c.GetLock("far").Acquire(ctx(t), Timeout(time.Second))
	require.NoError(t, err)
	require.False(t, ok)
	st := c.Stats()
	require.Equal(t, uint64(1), st.Waited)
	require.Equal(t, uint64(1), st.WaitsBeyondBudget, "one wait, in two phases (%d)", c.stats.farPhases.Load())
	require.GreaterOrEqual(t, c.stats.farPhases.Load(), uint64(2), "the wait went on past its first queueAfter")
}
