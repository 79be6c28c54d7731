package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A ticket whose return fails is given back later all the same. Here the
// key's queue lock is held (by a transaction of the test) for longer than
// the waiter's opTimeout, so the return of its ticket, queued when its
// Acquire was granted, fails. Before, that ticket stayed until the member
// stopped (a reconnect stamps it as the new backend's), and every later
// wait of another member for the key waited for its turn until its
// deadline, with the lock free.
func TestFailedTicketReturnRetried(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	held := newCoord(t, p).GetLock("k")
	mustAcquire(t, held, NoWait)
	// A short heartbeat: opTimeout is 5 s plus two of them.
	w := newCoord(t, p, func(cfg *Config) { cfg.HeartbeatInterval = 100 * time.Millisecond })
	wl := w.GetLock("k")
	tickets := func() int {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.wait_queue WHERE member_id = $1`, w.MemberID()).Scan(&n))
		return n
	}
	granted := make(chan error, 1)
	go func() {
		ok, err := wl.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = ErrLockAcquireFailed
		}
		granted <- err
	}()
	require.Eventually(t, func() bool { return tickets() == 1 }, 10*time.Second, 10*time.Millisecond, "the wait took a ticket")

	tx, err := testPool.Begin(ctx(t))
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx(t), `SELECT pgcoord.queue_lock($1)`, wl.Key())
	require.NoError(t, err)
	require.NoError(t, held.Release(ctx(t)))
	require.NoError(t, <-granted)
	// The return waits for the queue lock until opTimeout, then fails.
	time.Sleep(w.opTimeout() + 300*time.Millisecond)
	require.Equal(t, 1, tickets(), "the ticket is still there while its return cannot run")
	require.NoError(t, tx.Commit(ctx(t)))

	require.Eventually(t, func() bool { return tickets() == 0 }, 5*time.Second, 20*time.Millisecond, "the failed return was not tried again")
	require.NoError(t, wl.Release(ctx(t)))
}
