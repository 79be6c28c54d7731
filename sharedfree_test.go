package pgcoord

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSharedClaimFreedOnce: a shared try given up while its batch runs
// frees its in-process claim; the session's lease then runs out (a look by
// another goroutine) before the batch's leader gives the given-up grant
// back, and the loss frees the claims of every hold on the session, that
// one's again. Freed twice, it took a reader off the count twice: the
// count fell below the readers still holding the key, and a writer of this
// process was admitted and granted on the same session (the server never
// lets a session's own locks conflict) beside a reader. The hook orders
// it: the first batch (r1) waits, r2 and r3 queue for the next; r2's ctx
// ends as its hold is recorded, and the lease runs out as r3's is. Not
// parallel: testHookAddHold is global.
func TestSharedClaimFreedOnce(t *testing.T) {
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) {
		cfg.HeartbeatInterval = 10 * time.Second
		cfg.SessionTimeout = 60 * time.Second
	})
	r1, r2, r3, x := c.GetLock("k"), c.GetLock("k"), c.GetLock("k"), c.GetLock("k")
	mustAcquireShared(t, r1, NoWait)
	require.NoError(t, r1.Release(ctx(t)))
	s := c.lockSession(r1.key)
	queued := func() int {
		s.bmu.Lock()
		defer s.bmu.Unlock()
		return len(s.batch.queue)
	}
	unblock := make(chan struct{})
	r2done := make(chan struct{})
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	var adds atomic.Int32
	hook := func(hs *session) {
		if hs != s {
			return
		}
		switch adds.Add(1) {
		case 1:
			<-unblock
		case 2:
			cancel2()
			<-r2done
		case 3:
			s.expire(s.gen.Load()) // the lease look of another goroutine
		}
	}
	testHookAddHold.Store(&hook)
	defer testHookAddHold.Store(nil)

	r1res := make(chan error, 1)
	go func() {
		ok, err := r1.AcquireShared(ctx(t), NoWait)
		if err == nil && !ok {
			t.Error("r1 busy")
		}
		r1res <- err
	}()
	require.Eventually(t, func() bool { return adds.Load() == 1 }, 10*time.Second, time.Millisecond)
	go func() {
		defer close(r2done)
		ok, err := r2.AcquireShared(ctx2, NoWait)
		t.Logf("r2: %v %v", ok, err)
	}()
	require.Eventually(t, func() bool { return queued() == 1 }, 10*time.Second, time.Millisecond)
	r3res := make(chan error, 1)
	go func() {
		ok, err := r3.AcquireShared(ctx(t), NoWait)
		if err == nil && !ok {
			t.Error("r3 busy")
		}
		r3res <- err
	}()
	require.Eventually(t, func() bool { return queued() == 2 }, 10*time.Second, time.Millisecond)
	close(unblock)
	require.NoError(t, <-r1res)
	require.NoError(t, <-r3res)
	testHookAddHold.Store(nil)
	require.NotZero(t, r3.Token(), "r3 holds")
	c.local.mu.Lock()
	readers := -1
	if sl := c.local.entries[r3.key]; sl != nil {
		readers = sl.readers
	}
	c.local.mu.Unlock()
	require.Equal(t, 1, readers, "readers of the key in this process while r3 holds it shared")

	ok, err := x.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	if ok {
		_ = x.Release(ctx(t))
	}
	require.False(t, ok, "a writer of this process was granted the key while r3 holds it shared")
	require.NoError(t, r3.Release(ctx(t)))
}
