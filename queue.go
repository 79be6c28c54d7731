package pgcoord

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// Wait order across coordinators (docs/waits.md). The server's own lock
// queue is FIFO, but a wait leaves it at the end of every slice (see
// waitSlice) and a wait beyond the budget is never in it, so on its own it
// orders waits only for as long as none of them ends a slice. A wait that
// has lasted queueAfter (on the server, beyond the budget, or behind
// goroutines of its own process) therefore takes a ticket in
// pgcoord.wait_queue (migration 101), stamped with when the wait began, and
// waits its turn: it goes on to wait on the server, or to try, only once no
// live ticket of another member from before its member's earliest ticket
// for the key stands in its way (any, for an exclusive wait; an exclusive
// one, for a shared wait). A member's own waits keep their order in the
// process (localTable), so its claim holder stands at its earliest
// waiter's place. Until its turn a wait costs no backend: it waits for the
// NOTIFY a ticket given back sends (topicQueue), with a look every
// queueRecheck for a ticket whose member died.
//
// The costs: an acquire granted at its first try, or within queueAfter of
// waiting (a handoff under contention), takes no ticket, so those paths
// are unchanged; a longer wait costs a ticket (one statement,
// one row of an unlogged table) and its return (one more, with a NOTIFY
// when others wait), and each look at the queue one statement. The slack:
// a wait in its first queueAfter on the server is in the server's queue
// without a ticket, and may be granted before older waits that wait off
// the server for their turn (or, beyond the budget, win a race with them
// for a free name); a NoWait try never queues and may take a free name, as
// the server's own try-lock does.

// queueAfter is how long a wait waits on the server before it takes a
// ticket (its first slice): a handoff under contention takes far less, and
// costs no ticket.
const queueAfter = 100 * time.Millisecond

// queueRecheck is how often a queued wait looks at the queue without being
// notified: a ticket whose member died is given back by nobody (its
// backend is gone, so it stands in no one's way from then on).
const queueRecheck = time.Second

// ticket is one wait's place in its key's queue.
type ticket struct {
	key    int64
	id     int64
	shared bool
}

// queuePlace is a wait's standing in its key's queue: no ticket yet, or a
// ticket and whether it was at the head when last looked at (once at the
// head, a ticket stays there: tickets taken later come after it).
type queuePlace struct {
	arrived int64 // monoNow() when the acquire began: the ticket's since
	tk      *ticket
	head    bool
	// off: the wait takes no ticket (a semaphore's slot: the semaphore
	// queues its waits itself, see Semaphore.Acquire).
	off bool
	// ww is the wait's deadlock watch: it learns the waiter's creator
	// when the wait takes its ticket (see noteParent).
	ww *waitWatch
}

// errNotMyTurn tells wait that waitOn gave its wait session back: the
// wait's ticket is not at the head, and it waits for its turn off the
// server.
var errNotMyTurn = errors.New("pgcoord: not this wait's turn")

// queueState is the tickets of a coordinator's waits under way, so that a
// reconnect of the control session stamps those, and only those, anew (see
// restampQueue).
type queueState struct {
	mu   sync.Mutex
	live map[int64]struct{}
}

// add records ticket id as a wait's under way.
func (q *queueState) add(id int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.live == nil {
		q.live = map[int64]struct{}{}
	}
	q.live[id] = struct{}{}
}

// drop forgets ticket id: its wait is over.
func (q *queueState) drop(id int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.live, id)
}

// ids returns the tickets of the waits under way.
func (q *queueState) ids() []int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]int64, 0, len(q.live))
	for id := range q.live {
		out = append(out, id)
	}
	return out
}

// enqueue takes a ticket for key into q, and records whether nothing
// queued before it stands in its way. A ticket is only order: when the
// control session cannot take one (it is reconnecting and ctx ends first,
// say), the wait goes on without one, at the head, rather than fail a lock
// for it.
func (c *Coordinator) enqueue(ctx context.Context, q *queuePlace, key int64, shared bool) {
	// A wait this long may become long enough for the deadlock check,
	// which then need not dump every stack to learn its creator.
	q.ww.noteParent()
	if q.off {
		q.head = true
		return
	}
	var row db.QueueEnterRow
	args := db.QueueEnterParams{Key: key, Shared: shared, MemberID: c.memberID}
	// The ticket's since is the server's clock less the wait's age, so the
	// age is read as the statement goes out, not now: a statement that
	// waits for a busy control session (tens of ms a statement under
	// make fleet's load) would otherwise stamp its wait late by that much,
	// behind waits of other members that began after it
	// (TestTicketStampedWithArrival).
	age := func() int64 { return (monoNow() - q.arrived) / int64(time.Microsecond) }
	op := &ctlOp{key: key, kind: ctlEnqueue}
	op.queue = func(b *pgx.Batch) {
		args.AgeUs = age()
		b.Queue(db.QueueEnter, args.Key, args.Shared, args.MemberID, args.AgeUs).QueryRow(func(r pgx.Row) error {
			op.again = r.Scan(&row.Ticket, &row.Head) != nil // cannot happen: one row
			return nil
		})
	}
	op.single = func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		args.AgeUs = age()
		row, err = c.q.QueueEnter(ctx, conn, args)
		return err
	}
	// A ticket taken after its wait was given up (ctx ended meanwhile)
	// would stand in everyone's way until this member's control session
	// ends: it is given back.
	op.abandoned = func() {
		c.submitLeave(&ticket{key: key, id: row.Ticket, shared: shared})
	}
	err := c.ctlDo(ctx, op)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("pgcoord: waiting out of queue order", "key", key, "err", err)
		}
		q.head = true
		return
	}
	c.queue.add(row.Ticket)
	q.tk, q.head = &ticket{key: key, id: row.Ticket, shared: shared}, row.Head
}

// awaitTurn waits until q's ticket is at the head of its key's queue
// (true), the deadline passes (false, nil) or ctx ends (false, ctx.Err()).
// A zero deadline means none.
func (c *Coordinator) awaitTurn(ctx context.Context, q *queuePlace, deadline time.Time) (bool, error) {
	t := q.tk
	sub := c.notifier.subscribe(topicQueue, t.key)
	defer c.notifier.unsubscribe(sub)
	timeout, stop := deadlineTimer(deadline)
	defer stop()
	recheck := time.NewTimer(queueRecheck)
	defer recheck.Stop()
	for {
		// The subscription is woken once as soon as its LISTEN is in
		// place: a ticket given back before then notified nobody here.
		select {
		case <-sub.wake:
		case <-recheck.C:
		case <-timeout:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
		recheck.Reset(queueRecheck)
		if c.notifier.takeTurn(sub) {
			// The ticket given back named this member: its first ticket
			// for the key is the first live one (queue_leave), so the
			// look at the queue, one more round trip on the control
			// session in every handoff down the queue, is not needed.
			q.head = true
			return true, nil
		}
		head, err := c.queueHead(ctx, t)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return false, ctxErr
		}
		if err != nil {
			// Order is a courtesy, never a reason to fail a wait.
			c.log.Debug("pgcoord: waiting out of queue order", "key", t.key, "err", err)
			head = true
		}
		if head {
			q.head = true
			return true, nil
		}
	}
}

// leaveQueue gives t back in the background: the wait it ordered is over
// (granted, timed out or given up), and its caller need not wait for the
// round trip. Stop waits for it (see background).
func (c *Coordinator) leaveQueue(t *ticket) {
	if t == nil {
		return
	}
	c.queue.drop(t.id)
	c.submitLeave(t)
}

// leaveRetry is how long a ticket's failed return waits before it is tried
// again.
const leaveRetry = time.Second

// submitLeave queues t's return on the control session. A return that
// fails (the control session was down, or the key's queue lock busy, for
// longer than opTimeout) is tried again leaveRetry later, until it runs or
// the coordinator stops: a ticket left behind stands before every later
// wait of another member for the key (they wait for their turn until their
// deadline, with the lock free), for as long as this member lives, since a
// reconnect stamps the member's tickets as its new backend's.
func (c *Coordinator) submitLeave(t *ticket) {
	op := &ctlOp{key: t.key, kind: ctlLeave}
	op.queue = func(b *pgx.Batch) {
		b.Queue(db.QueueLeave, t.key, t.id)
	}
	op.single = func(ctx context.Context, conn *pgx.Conn) error {
		return c.q.QueueLeave(ctx, conn, db.QueueLeaveParams{Key: t.key, Ticket: t.id})
	}
	op.failed = func() {
		if c.runCtx.Err() != nil {
			return // stopping: the control session's end makes the ticket dead
		}
		time.AfterFunc(leaveRetry, func() { c.submitLeave(t) })
	}
	op.done = make(chan struct{})
	op.state.Store(opGone) // nobody waits for it
	// Refused only while stopping: the control session's end makes the
	// ticket dead.
	_ = c.ctlSubmit(op)
}

// queueHead reports whether t is at the head of its key's queue (see
// pgcoord.queue_head).
func (c *Coordinator) queueHead(ctx context.Context, t *ticket) (bool, error) {
	var head bool
	args := db.QueueHeadParams{Key: t.key, Ticket: t.id, Shared: t.shared}
	op := &ctlOp{key: t.key, kind: ctlHead}
	op.queue = func(b *pgx.Batch) {
		b.Queue(db.QueueHead, args.Key, args.Ticket, args.Shared).QueryRow(func(r pgx.Row) error {
			op.again = r.Scan(&head) != nil // cannot happen: one row
			return nil
		})
	}
	op.single = func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		head, err = c.q.QueueHead(ctx, conn, args)
		return err
	}
	if err := c.ctlDo(ctx, op); err != nil {
		// ctx ended first: the batch may still run op and write head
		// (race detector, TestChaosShort), so it is not read.
		return false, err
	}
	return head, nil
}

// restampQueue makes the tickets of this member's waits under way its new
// control backend's after a reconnect (see wait_queue.backend_pid). conn is
// the new control connection. Only those: stamping every row of the member,
// as it once did, brought back tickets no wait would ever give back (left
// by a previous life with the same member id, or by a given-up wait whose
// return was pending), and each stood before every later wait of other
// members for its key, until this member stopped
// (TestRestampLeavesOthersDead).
func (c *Coordinator) restampQueue(ctx context.Context, conn *pgx.Conn) {
	ids := c.queue.ids()
	if len(ids) == 0 {
		return
	}
	if err := c.q.QueueRestamp(ctx, conn, db.QueueRestampParams{MemberID: c.memberID, Tickets: ids}); err != nil {
		c.log.Debug("pgcoord: stamping wait tickets", "err", err)
	}
}

// forgetQueue deletes every ticket with this member's id (Start, Stop: no
// wait of this coordinator is under way). At Start they are a previous
// life's, dead unless their backend's pid has been reused since, which
// would make them stand in others' way until pruned; at Stop, this life's
// left by waits that Stop ended (their returns need the control session
// Stop is closing). Failing costs only that, so it is logged, not returned.
func (c *Coordinator) forgetQueue(ctx context.Context, conn *pgx.Conn) {
	if err := c.q.QueueForget(ctx, conn, c.memberID); err != nil {
		c.log.Warn("pgcoord: deleting the member's wait tickets", "err", err)
	}
}
