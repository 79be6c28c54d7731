package pgcoord

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func mustAcquireShared(t testing.TB, l *Lock, b Blocking) {
	t.Helper()
	ok, err := l.AcquireShared(ctx(t), b)
	require.NoError(t, err)
	require.True(t, ok, "acquire shared %q", l.Name())
}

// heldModes returns the modes of the granted server locks of key, one per
// session (from pgcoord.held_locks).
func heldModes(t testing.TB, key int64) []string {
	t.Helper()
	rows, err := testPool.Query(ctx(t), `SELECT mode FROM pgcoord.held_locks WHERE key = $1 AND granted ORDER BY mode`, key)
	require.NoError(t, err)
	defer rows.Close()
	var modes []string
	for rows.Next() {
		var m string
		require.NoError(t, rows.Scan(&m))
		modes = append(modes, m)
	}
	require.NoError(t, rows.Err())
	return modes
}

func TestSharedLockBasics(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	ra, rb1, rb2 := a.GetLock("doc"), b.GetLock("doc"), b.GetLock("doc")
	mustAcquireShared(t, ra, NoWait)
	mustAcquireShared(t, rb1, NoWait) // another coordinator
	mustAcquireShared(t, rb2, NoWait) // another Lock of the same coordinator
	require.Positive(t, ra.Token())
	require.Greater(t, rb1.Token(), ra.Token())
	require.Equal(t, []string{"shared", "shared"}, heldModes(t, ra.Key()), "one row per session")

	// No exclusive holder beside shared ones, here or there.
	requireBusy(t, a.GetLock("doc"))
	requireBusy(t, b.GetLock("doc"))
	ok, err := a.GetLock("doc").Acquire(ctx(t), Timeout(100*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)

	_, err = ra.AcquireShared(ctx(t), NoWait)
	require.ErrorIs(t, err, ErrAlreadyHeld)
	require.NoError(t, rb1.Release(ctx(t)))
	require.ErrorIs(t, rb1.Release(ctx(t)), ErrNotHeld)
	require.Equal(t, []string{"shared", "shared"}, heldModes(t, ra.Key()), "rb2 still holds its level")
	require.NoError(t, rb2.Release(ctx(t)))
	require.Equal(t, []string{"shared"}, heldModes(t, ra.Key()))
	require.NoError(t, ra.Release(ctx(t)))
	require.Empty(t, heldModes(t, ra.Key()))

	// An exclusive holder keeps shared ones out, here and there.
	w := a.GetLock("doc")
	mustAcquire(t, w, NoWait)
	require.Equal(t, []string{"exclusive"}, heldModes(t, w.Key()))
	for _, l := range []*Lock{a.GetLock("doc"), b.GetLock("doc")} {
		ok, err := l.AcquireShared(ctx(t), NoWait)
		require.NoError(t, err)
		require.False(t, ok)
	}
	// A shared waiter gets it when the writer releases.
	acquired := make(chan error, 1)
	r := b.GetLock("doc")
	go func() {
		ok, err := r.AcquireShared(ctx(t), Wait)
		if err == nil && !ok {
			err = fmt.Errorf("Wait returned false")
		}
		acquired <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, w.Release(ctx(t)))
	require.NoError(t, <-acquired)
	require.Equal(t, []string{"shared"}, heldModes(t, w.Key()))
	require.NoError(t, r.Release(ctx(t)))
}

// A shared hold lost to a dead session is reported like an exclusive one.
func TestSharedLockLost(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	r1, r2 := c.GetLock("s"), c.GetLock("s")
	mustAcquireShared(t, r1, NoWait)
	mustAcquireShared(t, r2, NoWait)
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, r1.Key()))
	require.NoError(t, err)
	requireClosedWithin(t, r1.Lost(), 5*time.Second, "r1 Lost")
	requireClosedWithin(t, r2.Lost(), 5*time.Second, "r2 Lost")
	require.ErrorIs(t, r1.Release(ctx(t)), ErrLockLost)
	mustAcquire(t, r2, NoWait) // exclusive now: nobody holds it
	require.NoError(t, r2.Release(ctx(t)))
}

// Shared holders never overlap an exclusive one: goroutines of two
// coordinators take one name in either mode and check a shared state.
func TestSharedNeverOverlapsExclusive(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	coords := []*Coordinator{newCoord(t, p), newCoord(t, p), newCoord(t, p, func(c *Config) { c.MaxSessions = 2 })}
	var readers, writers atomic.Int32
	var bad atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for ci, c := range coords {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(deadline); i++ {
					l := c.GetLock("rw")
					exclusive := (ci+g+i)%4 == 0
					var ok bool
					var err error
					if exclusive {
						ok, err = l.Acquire(ctx(t), Timeout(time.Second))
					} else {
						ok, err = l.AcquireShared(ctx(t), Timeout(time.Second))
					}
					if err != nil {
						t.Error(err)
						return
					}
					if !ok {
						continue
					}
					if exclusive {
						if writers.Add(1) != 1 || readers.Load() != 0 {
							bad.Add(1)
						}
						time.Sleep(time.Millisecond)
						writers.Add(-1)
					} else {
						readers.Add(1)
						if writers.Load() != 0 {
							bad.Add(1)
						}
						time.Sleep(time.Millisecond)
						readers.Add(-1)
					}
					if err := l.Release(ctx(t)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	require.Zero(t, bad.Load(), "a writer overlapped a reader or another writer")
}

// A waiting exclusive acquirer is not starved by a stream of shared ones:
// 8 goroutines take the lock shared in a loop (their holds overlapping, so
// the lock is never free while they run) and one waits exclusive: it gets
// the lock within a second, whether it lives in the readers' coordinator,
// in another, or in one whose waits all go beyond the session budget.
func TestSharedNoWriterStarvation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		writer func(t *testing.T, p string, readers *Coordinator) *Coordinator
	}{
		{"same coordinator", func(_ *testing.T, _ string, r *Coordinator) *Coordinator { return r }},
		{"other coordinator", func(t *testing.T, p string, _ *Coordinator) *Coordinator { return newCoord(t, p) }},
		{"beyond the budget", func(t *testing.T, p string, _ *Coordinator) *Coordinator {
			return newCoord(t, p, func(c *Config) { c.MaxSessions = 2 })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPrefix(t)
			readers := newCoord(t, p)
			writer := tc.writer(t, p, readers)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var reads atomic.Int64
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						l := readers.GetLock("hot")
						ok, err := l.AcquireShared(ctx(t), Timeout(5*time.Second))
						if err != nil || !ok {
							t.Errorf("reader: %v %v", ok, err)
							return
						}
						reads.Add(1)
						time.Sleep(time.Duration(10+rand.IntN(20)) * time.Millisecond)
						if err := l.Release(ctx(t)); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			require.Eventually(t, func() bool { return reads.Load() > 30 }, 10*time.Second, time.Millisecond)
			w := writer.GetLock("hot")
			began := time.Now()
			ok, err := w.Acquire(ctx(t), Timeout(10*time.Second))
			took := time.Since(began)
			require.NoError(t, err)
			require.True(t, ok)
			t.Logf("writer waited %v (reads so far %d)", took, reads.Load())
			require.Less(t, took, time.Second, "the writer was starved by readers")
			require.NoError(t, w.Release(ctx(t)))
			close(stop)
			wg.Wait()
		})
	}
}

func TestSynchronizedWithShared(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 2)
	for range 2 {
		go func() {
			done <- Synchronized(ctx(t), "report-{id}", map[string]int{"id": 1}, func(context.Context) error {
				inside <- struct{}{}
				<-release
				return nil
			}, WithCoordinator(c), WithShared())
		}()
	}
	<-inside
	<-inside // both run at once
	requireBusy(t, c.GetLock("report-1"))
	close(release)
	require.NoError(t, <-done)
	require.NoError(t, <-done)
	mustAcquire(t, c.GetLock("report-1"), NoWait)
}
