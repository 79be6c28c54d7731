package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// deadPID is a backend pid no server process has (above pid_max).
const deadPID = 2147483647

// staleTicket inserts a ticket for key under member's id whose backend is
// gone, as a wait of a previous life of the member (or one given up whose
// return was pending) leaves behind, and returns its id.
func staleTicket(t *testing.T, member string, key int64) int64 {
	t.Helper()
	var id int64
	require.NoError(t, testPool.QueryRow(ctx(t),
		`INSERT INTO pgcoord.wait_queue (key, shared, member_id, since, backend_pid)
		 VALUES ($1, false, $2, now() - interval '1 minute', $3) RETURNING ticket`,
		key, member, deadPID).Scan(&id))
	return id
}

// ticketPID returns the backend stamped on ticket id, 0 if it is gone.
func ticketPID(t *testing.T, id int64) int32 {
	t.Helper()
	var pid int32
	_ = testPool.QueryRow(ctx(t), `SELECT backend_pid FROM pgcoord.wait_queue WHERE ticket = $1`, id).Scan(&pid)
	return pid
}

// controlPID returns c's control backend now.
func controlPID(t *testing.T, c *Coordinator) int32 {
	t.Helper()
	require.NoError(t, c.control.lock(ctx(t)))
	defer c.control.unlock()
	return c.control.backendPID
}

// TestRestampLeavesOthersDead: a control reconnect stamps anew the tickets
// of the member's waits under way, and no other row with its id. Before,
// it stamped them all: a dead ticket of the member's (here inserted by
// hand, as a previous life's) came back to life, and another member's wait
// for its key, queued behind it, never had its turn while the key was
// free.
func TestRestampLeavesOthersDead(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, holder, b := newCoord(t, p), newCoord(t, p), newCoord(t, p)

	// c waits for x long enough to take a ticket: its wait is under way.
	x := holder.GetLock("x")
	mustAcquire(t, x, NoWait)
	cx := c.GetLock("x")
	got := make(chan error, 1)
	go func() {
		ok, err := cx.Acquire(ctx(t), Timeout(20*time.Second))
		if err == nil && !ok {
			err = errNotMyTurn // (any error: the wait timed out)
		}
		got <- err
	}()
	var live int64
	require.Eventually(t, func() bool {
		var id int64
		_ = testPool.QueryRow(ctx(t), `SELECT ticket FROM pgcoord.wait_queue WHERE member_id = $1`, c.MemberID()).Scan(&id)
		live = id
		return live != 0
	}, 10*time.Second, 5*time.Millisecond, "c's wait never took a ticket")

	k := holder.GetLock("k")
	mustAcquire(t, k, NoWait)
	stale := staleTicket(t, c.MemberID(), k.Key())

	oldPID := controlPID(t, c)
	require.Equal(t, oldPID, ticketPID(t, live))
	cutControl(t, c)
	// The reconnect's restamp has run once c's live ticket is its new
	// control backend's.
	require.Eventually(t, func() bool {
		pid := ticketPID(t, live)
		return pid != 0 && pid != oldPID && pid == controlPID(t, c)
	}, 15*time.Second, 10*time.Millisecond, "c's live ticket was never stamped anew")
	// Still dead, or deleted: a Prune of another test running beside this
	// one deletes every dead ticket on the shared server (CI saw 0 here
	// once). Stamped anew, it would carry c's control backend, which no
	// Prune deletes.
	if pid := ticketPID(t, stale); pid != 0 {
		require.Equal(t, int32(deadPID), pid, "a ticket of no wait under way was stamped anew")
	}

	requireQueuedWaitGranted(t, k, b.GetLock("k"))

	require.NoError(t, x.Release(ctx(t)))
	require.NoError(t, <-got)
	require.NoError(t, cx.Release(ctx(t)))
}

// requireQueuedWaitGranted has waiter wait for the name held, queued (its
// wait lasts longer than queueAfter), and held released once the waiter's
// ticket is on the server: the wait must be granted then, not time out 5 s
// after it began behind a ticket that stands in its way.
//
// The release waits for the ticket, looked at, not slept for: it came after
// a 300 ms sleep, and on a loaded machine the wait had not taken its ticket
// by then (a registration, a try and a first slice of queueAfter come
// before). The waiter was then granted ticketless, its enqueue never ran,
// and TestTicketOfReusedPIDIsDead found the ghost's ticket not deleted
// (make test, 1 run in 4).
func requireQueuedWaitGranted(t *testing.T, held, waiter *Lock) {
	t.Helper()
	done := make(chan bool, 1)
	began := time.Now()
	go func() {
		ok, err := waiter.Acquire(ctx(t), Timeout(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		done <- ok
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.wait_queue WHERE key = $1 AND member_id = $2`,
			waiter.Key(), waiter.c.MemberID()).Scan(&n))
		return n == 1
	}, 5*time.Second, time.Millisecond, "the wait for %q took no ticket", waiter.Name())
	queued := time.Since(began)
	require.NoError(t, held.Release(ctx(t)))
	require.True(t, <-done, "the wait for %q, queued after %v and free then, timed out after %v", waiter.Name(), queued, time.Since(began))
	require.NoError(t, waiter.Release(ctx(t)))
}

// TestStartAndStopForgetTickets: Start deletes the tickets a previous life
// of the member left (with a fixed AgentID, the member id is the same),
// and Stop those of its own waits that Stop ended.
func TestStartAndStopForgetTickets(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	member := p + "fixed-agent"
	old := staleTicket(t, member, 42)
	c := newCoord(t, p, func(cfg *Config) { cfg.AgentID = "fixed-agent" })
	require.Equal(t, member, c.MemberID())
	require.Zero(t, ticketPID(t, old), "Start left the previous life's ticket")

	mine := staleTicket(t, member, 43)
	require.NoError(t, c.Stop(ctx(t)))
	require.Zero(t, ticketPID(t, mine), "Stop left a ticket of the member's")
}
