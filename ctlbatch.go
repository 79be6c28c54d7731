package pgcoord

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Short control statements of concurrent callers share round trips.
//
// Under contention many goroutines of one coordinator need the control
// session at the same moment for one short statement each: a name's first
// registration, a wait's ticket, a look at its queue, a ticket given back.
// The session is one connection, so they queue for it, and on a busy server
// every round trip costs a scheduling delay at both ends: make fleet (50
// coordinators on a server with 100 connection slots, every wait beyond
// the budget) measured 50 to 130 ms per control statement at load 18, and a
// block profile of its coordinators put 46% of their goroutines' blocked
// time in the queue for a session, most of it the control session's. So
// the statements pending when the session comes free go as one pgx.Batch,
// in one round trip: the more callers wait, the more each round trip
// carries, and a lone caller pays what it paid before.
//
// A batch is one implicit transaction (one Sync), so its statements hold
// their locks until its end: the queue statements take their key's queue
// lock (pgcoord.queue_lock), a registration the name's row. The batch runs
// them in (key, kind) order, the order every batch takes them in, so two
// batches never wait for each other in a cycle. A statement error aborts
// the whole transaction, so then every statement of the batch runs again
// on its own, as it did before batching (errors are rare: a concurrent
// first registration of a name, a lock timeout). One refused for a lock
// (an application's transaction holds a row it writes) is retried only
// while its own caller waits, so it holds up the statements behind it no
// longer than that.

// errBatchFailed tells ctlFlush that a statement of the batch failed.
var errBatchFailed = errors.New("pgcoord: a batched control statement failed")

// ctlKind orders a batch's statements of one key.
type ctlKind uint8

const (
	ctlRegister ctlKind = iota
	// A ticket's return before the tickets taken and the heads looked at
	// in the same batch: a wait of this process that takes its ticket as
	// another's, granted, goes back (the next in the process's queue for
	// the key) must not find that one still there, and be put at its
	// place, before other members' waits that came earlier
	// (TestSemaphoreMembersWaitsKeepArrivalOrder).
	ctlLeave
	ctlEnqueue
	ctlHead
)

// ctlOp is one short control statement.
type ctlOp struct {
	key  int64
	kind ctlKind
	// queue adds the statement to a batch; its callback records the
	// result and returns nil (a callback's error would not undo the
	// batch, which committed), setting again when the statement must run
	// once more on its own.
	queue func(b *pgx.Batch)
	again bool
	// single runs the statement on its own (after a failed batch).
	single func(ctx context.Context, conn *pgx.Conn) error
	// abandoned, if set, runs when the statement succeeded after its
	// caller stopped waiting (an enqueue gives its ticket back).
	abandoned func()
	// failed, if set, runs when the statement failed (a ticket's return
	// tries again later).
	failed func()

	// ctx is the caller's: a statement run on its own stops being retried
	// (after a lock timeout) when it ends, so one statement that waits on
	// an application's lock holds up the others no longer than its
	// caller waits (see ctlFlush).
	ctx context.Context

	err error
	// state: opPending, opDone (the result is the caller's), opGone (the
	// caller stopped waiting: the result is nobody's).
	state atomic.Int32
	done  chan struct{}
}

const (
	opPending int32 = iota
	opDone
	opGone
)

// ctlBatcher collects the pending statements; one flusher at a time sends
// them.
type ctlBatcher struct {
	mu       sync.Mutex
	pending  []*ctlOp
	flushing bool
	// trips and ops count the round trips (batches and statements run on
	// their own) and the statements they carried, for the tests.
	trips, ops atomic.Int64
}

// ctlDo runs op on the control session, batched with other callers'
// statements, and waits for its result until ctx ends. As with
// session.detached, ctx ends the wait, never the statement.
func (c *Coordinator) ctlDo(ctx context.Context, op *ctlOp) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op.done = make(chan struct{})
	op.ctx = ctx
	if !c.ctlSubmit(op) {
		return ErrNotStarted
	}
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opPending, opGone) {
			return ctx.Err()
		}
		<-op.done // finished meanwhile: the result is the caller's
		return op.err
	}
}

// ctlSubmit queues op and starts a flusher if none runs; false when the
// coordinator is stopping.
func (c *Coordinator) ctlSubmit(op *ctlOp) bool {
	b := &c.ctlb
	b.mu.Lock()
	b.pending = append(b.pending, op)
	if b.flushing {
		b.mu.Unlock()
		return true
	}
	if !c.bg.start() {
		b.pending = b.pending[:len(b.pending)-1]
		b.mu.Unlock()
		return false
	}
	b.flushing = true
	b.mu.Unlock()
	go c.ctlFlushLoop()
	return true
}

// ctlFlushLoop sends the pending statements, a batch per round trip, until
// none is left.
func (c *Coordinator) ctlFlushLoop() {
	defer c.bg.done()
	b := &c.ctlb
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.flushing = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		c.ctlFlush()
	}
}

// take returns the pending statements in (key, kind) order.
func (b *ctlBatcher) take() []*ctlOp {
	b.mu.Lock()
	ops := b.pending
	b.pending = nil
	b.mu.Unlock()
	slices.SortStableFunc(ops, func(x, y *ctlOp) int {
		return cmp.Or(cmp.Compare(x.key, y.key), cmp.Compare(x.kind, y.kind))
	})
	return ops
}

// ctlFlush runs the pending statements, in one round trip where it can, and
// ends each. It takes them once it has the session, so that those that
// came while it waited for it go too.
func (c *Coordinator) ctlFlush() {
	// Bounded as every detached statement is (see session.detached); the
	// callers wait for their own ctx, not for this.
	ctx, cancel := context.WithTimeout(c.runCtx, c.opTimeout())
	defer cancel()
	var ops []*ctlOp
	err := c.control.detachedSync(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		if ops == nil {
			ops = c.ctlb.take()
			c.ctlb.trips.Add(1)
			c.ctlb.ops.Add(int64(len(ops)))
		}
		for _, op := range ops {
			op.err, op.again = nil, false
		}
		if len(ops) == 1 {
			// On its own; a lock timeout is retried below, under its
			// caller's ctx.
			err := ops[0].single(ctx, conn)
			if isLockTimeout(err) && !conn.IsClosed() {
				return errBatchFailed
			}
			return err
		}
		b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(ops))}
		for _, op := range ops {
			op.queue(b)
		}
		err := conn.SendBatch(ctx, b).Close()
		var pgErr *pgconn.PgError
		if err == nil || conn.IsClosed() || !errors.As(err, &pgErr) {
			// A broken connection (detached waits for the reconnect):
			// the batch, whose transaction did not commit, runs again.
			return err
		}
		// A statement failed: a lock timeout too runs each statement on
		// its own, each retried for as long as its own caller waits. Run
		// again whole, the batch held every statement in it, and every
		// statement submitted meanwhile, for the flush's whole bound
		// behind one that waited for an application's lock (a helper
		// saw a fresh name's registration fail after 3 s behind another
		// name's; TestStuckControlStatementHoldsUpNoOther).
		return errBatchFailed
	})
	if ops == nil {
		// fn never ran (stopping, or the session never came back): the
		// statements fail with err.
		ops = c.ctlb.take()
	}
	if err == errBatchFailed {
		// A statement failed, and the transaction with it: each one on
		// its own, as each ran before batching.
		err = nil
		for _, op := range ops {
			op.err = c.runSingle(ctx, op)
		}
	} else if err == nil {
		for _, op := range ops {
			if op.again {
				op.err = c.runSingle(ctx, op)
			}
		}
	}
	for _, op := range ops {
		if err != nil {
			op.err = err
		}
		if !op.state.CompareAndSwap(opPending, opDone) && op.err == nil && op.abandoned != nil {
			op.abandoned()
		}
		if op.err != nil && op.failed != nil {
			op.failed()
		}
		close(op.done)
	}
}

// runSingle runs op on its own, within ctx (the flush's bound) and for no
// longer than its caller waits: a statement whose caller has gone runs
// not at all (nothing of it ran: the batch it was in did not commit), and
// one refused for a lock is retried only while its caller waits.
func (c *Coordinator) runSingle(ctx context.Context, op *ctlOp) error {
	if op.state.Load() == opGone {
		return context.Canceled
	}
	if op.ctx != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(op.ctx, cancel)()
	}
	return c.control.detachedSync(ctx, op.single)
}
