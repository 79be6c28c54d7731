package pgcoord

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petermattis/goid"
	"github.com/stretchr/testify/require"
)

// TestNoteParent: a waiter reads its creator from its own stack.
func TestNoteParent(t *testing.T) {
	t.Parallel()
	test := goid.Get()
	got := make(chan *waitWatch)
	go func() {
		w := &waitWatch{gid: goid.Get()}
		w.noteParent()
		got <- w
	}()
	w := <-got
	require.True(t, w.parentKnown.Load())
	require.Equal(t, test, w.parent.Load())
}

// TestLongWaitsHoldingNothingCostNothing: waits that answer for no hold
// (a fleet's: each goroutine holds one name at a time, and nothing while
// it waits) can be in no cycle, so a member whose long waits are all such
// asks the server nothing, however long they last. A wait that holds
// something is checked as before (TestDeadlock*).
func TestLongWaitsHoldingNothingCostNothing(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder, c := newCoord(t, p), newCoord(t, p)
	h := holder.GetLock("x")
	mustAcquire(t, h, NoWait)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			l := c.GetLock("x")
			ok, err := l.Acquire(ctx(t), Wait)
			if err == nil && !ok {
				err = errors.New("Wait returned false")
			}
			if ok {
				err = l.Release(context.Background())
			}
			errs <- err
		})
	}
	time.Sleep(deadlockTimeout + 3*deadlockCheckEvery)
	d := &c.deadlocks
	d.mu.Lock()
	long := len(d.long)
	d.mu.Unlock()
	require.Equal(t, 3, long, "the waits are long")
	require.Zero(t, d.checks.Load(), "no check asked the server")
	require.Zero(t, longWaitRows(t, c))
	require.NoError(t, h.Release(ctx(t)))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
