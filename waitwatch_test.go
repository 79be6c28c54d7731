package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/petermattis/goid"
	"github.com/stretchr/testify/require"
)

// TestWaitWatchContextIsLazy: a wait's context (Stop, the caller's ctx,
// a deadlock abort) is made on its first Done, and says the same before
// and after: an abort or a Stop before it is made is seen in Err, result
// and the made context; a context made once the wait is past
// deadlockTimeout publishes the wait at once; one made after end is
// ended.
func TestWaitWatchContextIsLazy(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("lazy")
	made := func() int64 { return c.deadlocks.made.Load() }

	w := c.watchWait(context.Background(), goid.Get(), l, nil, false)
	// began is set by hand: a stall of the test past queueAfter between
	// watchWait and light must not decide the answer.
	w.began = monoNow() + int64(time.Hour)
	require.True(t, w.light(queueAfter), "a fresh wait under a ctx that cannot end")
	require.False(t, w.light(queueAfter+time.Millisecond), "a slice longer than queueAfter")
	w.began = monoNow() - int64(queueAfter)
	require.False(t, w.light(queueAfter), "a wait already past its first queueAfter")
	require.NoError(t, w.Err())
	require.Zero(t, made())

	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.False(t, c.watchWait(cancellable, goid.Get(), l, nil, false).light(queueAfter),
		"the caller's ctx can end: pgx must watch it")

	// An abort before the context is made.
	deadlock := fmt.Errorf("%w: test", ErrDeadlock)
	w.abort(deadlock)
	require.ErrorIs(t, w.Err(), context.Canceled)
	require.ErrorIs(t, w.result(errors.New("statement failed")), ErrDeadlock)
	requireClosedWithin(t, w.Done(), time.Second, "the made context of an aborted wait")
	require.Equal(t, int64(1), made())
	require.False(t, w.light(queueAfter), "made")
	require.ErrorIs(t, context.Cause(w), ErrDeadlock, "a derived context finds the made one")
	w.end()

	// Made late: the deadlock timer runs from the wait's start.
	late := c.watchWait(context.Background(), goid.Get(), l, nil, false)
	late.began = monoNow() - int64(2*deadlockTimeout)
	require.False(t, late.light(queueAfter), "past its first queueAfter")
	_ = late.Done()
	require.Eventually(t, func() bool {
		c.deadlocks.mu.Lock()
		defer c.deadlocks.mu.Unlock()
		_, long := c.deadlocks.long[late]
		return long
	}, 5*time.Second, time.Millisecond, "a wait past deadlockTimeout is published when its context is made")
	late.end()
	c.deadlocks.mu.Lock()
	_, long := c.deadlocks.long[late]
	c.deadlocks.mu.Unlock()
	require.False(t, long, "end takes it off the book")

	// Made after end: ended.
	ended := c.watchWait(context.Background(), goid.Get(), l, nil, false)
	ended.end()
	requireClosedWithin(t, ended.Done(), time.Second, "a context made after end")

	// Stop before the context is made.
	stopped := c.watchWait(context.Background(), goid.Get(), l, nil, false)
	defer stopped.end()
	require.NoError(t, c.Stop(ctx(t)))
	require.ErrorIs(t, stopped.Err(), context.Canceled)
	done := stopped.Done()
	require.ErrorIs(t, stopped.Err(), context.Canceled, "made after Stop: ended at once, as Err said before")
	requireClosedWithin(t, done, time.Second, "the made context after Stop")
}

// TestFirstSliceGrantMakesNoContext: a wait granted in its first slice on
// an open wait session (the contended handoff) runs its one statement
// under no context and makes none (issue 18: 23 allocations per handoff
// became 9). A wait can take longer than its first slice on a loaded
// machine, so the test asks for one such grant in five tries.
func TestFirstSliceGrantMakesNoContext(t *testing.T) {
	t.Parallel()
	holder, wc, waiter := contenders(t, "handoff")
	handoff := func() int64 {
		mustAcquire(t, holder, NoWait)
		before := wc.deadlocks.made.Load()
		got := make(chan error, 1)
		go func() {
			ok, err := waiter.Acquire(context.Background(), Wait)
			if err == nil && !ok {
				err = errors.New("not acquired")
			}
			got <- err
		}()
		require.Eventually(t, func() bool { return serverWaitOf(t, wc, waiter.Key()) },
			10*time.Second, time.Millisecond, "the waiter waits on the server")
		require.NoError(t, holder.Release(ctx(t)))
		require.NoError(t, <-got)
		require.NoError(t, waiter.Release(ctx(t)))
		return wc.deadlocks.made.Load() - before
	}
	// The first wait dials its wait session, under the made context.
	require.Positive(t, handoff())
	var made []int64
	for range 5 {
		n := handoff()
		if n == 0 {
			return
		}
		made = append(made, n)
	}
	t.Fatalf("every handoff made a context: %v", made)
}

// contenders returns a Lock of a coordinator of its own on name, and the
// waiting coordinator and its Lock on the same name.
func contenders(t *testing.T, name string) (holder *Lock, wc *Coordinator, waiter *Lock) {
	t.Helper()
	p := testPrefix(t)
	holder = newCoord(t, p).GetLock(name)
	wc = newCoord(t, p)
	return holder, wc, wc.GetLock(name)
}

// TestStopEndsFirstSliceWait: Stop ends a wait whose first slice runs
// under no context (see waitWatch) by moving its socket's deadline to now
// (interruptLight), and the wait fails.
func TestStopEndsFirstSliceWait(t *testing.T) {
	t.Parallel()
	holder, wc, waiter := contenders(t, "stopped")
	mustAcquire(t, holder, NoWait)
	// Warm: the wait session is open, so the next wait's first slice is
	// light.
	ok, err := waiter.Acquire(context.Background(), Timeout(150*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)
	before := wc.deadlocks.made.Load()
	got := make(chan error, 1)
	go func() {
		ok, err := waiter.Acquire(context.Background(), Wait)
		if err == nil && ok {
			err = errors.New("acquired a held lock")
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return serverWaitOf(t, wc, waiter.Key()) },
		10*time.Second, time.Millisecond, "the waiter waits on the server")
	start := time.Now()
	require.NoError(t, wc.Stop(ctx(t)))
	took := time.Since(start)
	select {
	case err := <-got:
		require.ErrorIs(t, err, ErrNotStarted)
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end with Stop")
	}
	t.Logf("Stop took %v; contexts made by the wait: %d", took, wc.deadlocks.made.Load()-before)
	require.Less(t, took, 2*time.Second, "Stop waits for the first slice at most")
}
