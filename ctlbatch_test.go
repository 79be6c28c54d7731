package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// holdControl takes c's control session until the returned func is called,
// so that the statements submitted meanwhile go as one batch.
func holdControl(t *testing.T, c *Coordinator) func() {
	t.Helper()
	require.NoError(t, c.control.lock(ctx(t)))
	return c.control.unlock
}

// pendingCtl returns how many statements wait for c's control session.
func pendingCtl(c *Coordinator) int {
	c.ctlb.mu.Lock()
	defer c.ctlb.mu.Unlock()
	return len(c.ctlb.pending)
}

// registerAll registers names concurrently while the control session is
// held, then lets it go, and returns each registration's error.
func registerAll(t *testing.T, c *Coordinator, names []string) []error {
	t.Helper()
	release := holdControl(t, c)
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { errs[i] = c.register(ctx(t), c.GetLock(n)) })
	}
	require.Eventually(t, func() bool { return pendingCtl(c) == len(names) }, 10*time.Second, time.Millisecond)
	release()
	wg.Wait()
	return errs
}

// TestControlBatch: registrations that wait for the control session at
// the same time go in one round trip, each with its own result: a name
// whose key is registered to another name is refused
// (ErrKeyCollision), the others are registered.
func TestControlBatch(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	names := make([]string, 20)
	for i := range names {
		names[i] = fmt.Sprintf("batch-%d", i)
	}
	_, err := testPool.Exec(ctx(t), `INSERT INTO pgcoord.locks (key, name) VALUES ($1, $2)`,
		c.GetLock(names[3]).Key(), p+"impostor")
	require.NoError(t, err)
	trips, ops := c.ctlb.trips.Load(), c.ctlb.ops.Load()
	errs := registerAll(t, c, names)
	require.Equal(t, int64(1), c.ctlb.trips.Load()-trips, "one round trip")
	require.Equal(t, int64(len(names)), c.ctlb.ops.Load()-ops)
	for i, err := range errs {
		if i == 3 {
			require.ErrorIs(t, err, ErrKeyCollision)
			continue
		}
		require.NoError(t, err, names[i])
		var got string
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT name FROM pgcoord.locks WHERE key = $1`, c.GetLock(names[i]).Key()).Scan(&got))
		require.Equal(t, p+names[i], got)
	}
}

// TestControlBatchStatementFails: a statement that fails on the server
// aborts its batch's transaction; every statement then runs on its own, so
// only the failing one fails. (A name registered under another key
// violates the registry's unique name.)
func TestControlBatchStatementFails(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	names := []string{"a", "b", "c", "d"}
	_, err := testPool.Exec(ctx(t), `INSERT INTO pgcoord.locks (key, name) VALUES ($1, $2)`,
		c.GetLock("other").Key(), p+"c")
	require.NoError(t, err)
	errs := registerAll(t, c, names)
	for i, err := range errs {
		if names[i] == "c" {
			require.ErrorContains(t, err, "23505")
			continue
		}
		require.NoError(t, err, names[i])
	}
	for _, n := range []string{"a", "b", "d"} {
		var got string
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT name FROM pgcoord.locks WHERE key = $1`, c.GetLock(n).Key()).Scan(&got))
		require.Equal(t, p+n, got)
	}
}

// TestAbandonedTicketGivenBack: a wait that stops waiting for its ticket
// (its ctx ended while the statement was queued) does not leave the ticket
// standing in everyone's way: it is given back once taken.
func TestAbandonedTicketGivenBack(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	key := c.GetLock("abandoned").Key()
	release := holdControl(t, c)
	short, cancel := context.WithTimeout(ctx(t), 100*time.Millisecond)
	defer cancel()
	q := &queuePlace{arrived: monoNow()}
	ops := c.ctlb.ops.Load()
	c.enqueue(short, q, key, false)
	require.Nil(t, q.tk, "the wait gave up on its ticket")
	release()
	tickets := func() (n int) {
		require.NoError(t, testPool.QueryRow(ctx(t),
			`SELECT count(*) FROM pgcoord.wait_queue WHERE member_id = $1`, c.memberID).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return c.ctlb.ops.Load()-ops >= 2 }, 10*time.Second, 5*time.Millisecond,
		"the ticket was taken and given back")
	require.Eventually(t, func() bool { return tickets() == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Empty(t, c.queue.ids())
}

// TestTicketStampedWithArrival: a ticket's since is when its wait began,
// however long its statement waited for the control session. The age sent
// with it is read when the statement goes out, not when it was queued: a
// ticket queued behind a busy control session (make fleet: 50 to 130 ms a
// statement under load, more at times) was stamped late by that much, and
// then sorted behind waits of other members that began after it.
func TestTicketStampedWithArrival(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	key := c.GetLock("stamped").Key()
	release := holdControl(t, c)
	q := &queuePlace{arrived: monoNow()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.enqueue(ctx(t), q, key, false)
	}()
	require.Eventually(t, func() bool { return pendingCtl(c) == 1 }, 5*time.Second, time.Millisecond)
	const held = 600 * time.Millisecond
	time.Sleep(held)
	release()
	<-done
	require.NotNil(t, q.tk)
	defer c.leaveQueue(q.tk)
	var serverAge float64
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT extract(epoch FROM clock_timestamp() - since) FROM pgcoord.wait_queue WHERE ticket = $1`, q.tk.id).Scan(&serverAge))
	clientAge := time.Duration(monoNow() - q.arrived)
	got := time.Duration(serverAge * float64(time.Second))
	// Both clocks measure the same interval, less the round trips between
	// the two readings; the late stamp was off by the whole hold.
	require.InDelta(t, clientAge.Seconds(), got.Seconds(), (held / 2).Seconds(),
		"ticket age on the server %v, wait's age %v", got, clientAge)
}

// One control statement that waits for an application's lock holds up
// the others no longer than its own caller waits. Here a name's
// registration must rewrite its row (last_used is old) while an outside
// transaction holds the row; its Acquire gives up after 300 ms, and a
// fresh name's Acquire, submitted meanwhile, registers and succeeds.
// Before, the flush ran the stuck statement again for its whole bound
// (opTimeout, 7 s), with every statement submitted meanwhile waiting
// behind it: the fresh name's Acquire failed after 3 s (found by a review
// helper).
func TestStuckControlStatementHoldsUpNoOther(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	first := newCoord(t, p)
	stuck := first.GetLock("stuck")
	mustAcquire(t, stuck, NoWait) // registered
	require.NoError(t, stuck.Release(ctx(t)))
	_, err := testPool.Exec(ctx(t), `UPDATE pgcoord.locks SET last_used = now() - interval '5 minutes' WHERE key = $1`, stuck.Key())
	require.NoError(t, err)
	tx, err := testPool.Begin(ctx(t))
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx(t), `SELECT 1 FROM pgcoord.locks WHERE key = $1 FOR UPDATE`, stuck.Key())
	require.NoError(t, err)

	c := newCoord(t, p)
	gaveUp := make(chan error, 1)
	go func() {
		short, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
		defer cancel()
		ok, err := c.GetLock("stuck").Acquire(short, NoWait)
		if ok {
			err = errors.New("registered through the outside transaction's row lock")
		}
		gaveUp <- err
	}()
	time.Sleep(100 * time.Millisecond)
	fresh, cancel := context.WithTimeout(ctx(t), 3*time.Second)
	defer cancel()
	start := time.Now()
	ok, err := c.GetLock("fresh").Acquire(fresh, NoWait)
	took := time.Since(start)
	require.NoError(t, err, "the fresh name's registration waited behind the stuck one (%v)", took)
	require.True(t, ok)
	require.ErrorIs(t, <-gaveUp, context.DeadlineExceeded)
	t.Logf("the fresh name's Acquire took %v", took)
}
