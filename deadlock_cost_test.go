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
	require.Equal(t, test, w.parentGID.Load())
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

// TestGrantedWaitAnswersNotForItsOwnGrant: between a long wait's grant
// and the end of its watch, its goroutine holds the very key it is
// recorded as waiting for. Counted as a hold the wait answers for, that
// made a cycle of one ("member m (goroutine g) waits for x held by member
// m (goroutine g)"): make fleet logged four such "deadlocks" in a 10 s
// run, their members' processes starved of CPU for longer than the
// check's confirmation, and a victim cancelled in that window could lose
// a grant the server had made. A hold its own goroutine took during the
// wait is the wait's result, never something it holds while it waits;
// holds taken before the wait began still count.
func TestGrantedWaitAnswersNotForItsOwnGrant(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	before := c.GetLock("before")
	mustAcquire(t, before, NoWait) // held before the wait began
	w := c.watchWait(ctx(t), goid.Get(), c.GetLock("x"), nil, false)
	defer w.end()
	x := c.GetLock("x")
	mustAcquire(t, x, NoWait) // the wait's grant, on the same goroutine
	p := c.longWaitParams([]*waitWatch{w})
	require.Len(t, p.WaitIds, 1)
	require.Equal(t, []int64{before.Key()}, p.HeldKeys, "the hold taken before the wait counts; the wait's own grant does not")
	require.NoError(t, before.Release(ctx(t)))
	p = c.longWaitParams([]*waitWatch{w})
	require.Empty(t, p.WaitIds, "answering for nothing but its own grant, the wait is in no cycle")
	require.NoError(t, x.Release(ctx(t)))
}
