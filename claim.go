package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petermattis/goid"

	"github.com/pgcoord/pgcoord/db"
)

// The claim layer: every primitive takes a name through acquire, which
// claims its key in this process (localTable), registers the name, tries
// it on a lock session and, if it may wait, takes its place in the key's
// queue across coordinators (queue.go) and waits for it (wait.go, far.go).

// acquire claims the key in-process, then on the server: one try on a lock
// session, then, if allowed to wait, a server-side wait on a wait session. A
// waiting acquire of a key found busy lately skips the try (see busyHint).
// lost is the channel the hold closes when lost: the one Lock.Lost returned
// while nothing was held.
func (c *Coordinator) acquire(ctx context.Context, l *Lock, b Blocking, shared bool, lost chan struct{}) (_ *hold, err error) {
	var deadline time.Time
	if b.mode == blockTimeout {
		deadline = time.Now().Add(b.timeout)
	}
	gid := goid.Get() // the hold's goroutine, for deadlock detection
	// The first try runs under the caller's own ctx: Stop closes the lock
	// sessions, which ends it anyway, and a ctx that cannot end keeps the
	// try on the plain path (see session.runTry).
	tryCtx := ctx
	var w *waitWatch
	if b.mode != blockNoWait {
		// Stop ends waits, and so does the deadlock detector (see
		// watchWait). NoWait never waits, and spares the hot path both.
		w = c.watchWait(ctx, gid, l, nil, shared)
		ctx = w
		defer w.end()
		defer func() { err = w.result(err) }()
	}

	waitStart := time.Now()
	var waited bool
	defer func() {
		if waited && !l.unqueued { // a semaphore counts its own waits
			c.observeWait(time.Since(waitStart))
		}
	}()
	// The wait's place in the key's queue across coordinators (queue.go).
	// Made only when the acquire waits: a queuePlace escapes to the heap,
	// and the uncontended path allocates nothing for it.
	arrived := monoNow()
	var q *queuePlace
	defer func() {
		if q != nil {
			c.leaveQueue(q.tk)
		}
	}()
	// A name whose key this process registered for another name is refused
	// before its claim: that claim would find the other name's claim on
	// the key and report the name busy (or wait for it), when no wait can
	// ever give it the key.
	known, other := c.names.lookup(l.key, l.full)
	if other != "" {
		return nil, collision(l, other)
	}
	// The hold is made first: its claim in the local table lives in it.
	h := &hold{lock: l, key: l.key, shared: shared, lost: lost, gid: gid}
	// A wait that queues behind goroutines of this process for longer than
	// queueAfter takes its ticket then, while it still waits here, stamped
	// with its arrival: waits of other members that come after it must not
	// go first. Taken only once the claim came to it, the ticket was late:
	// another member's later wait, queued meanwhile, was at the head when
	// this process's holder released, and was granted first
	// (TestLocalWaiterKeepsItsPlaceAcrossMembers).
	var long func()
	if b.mode != blockNoWait {
		long = func() {
			q = &queuePlace{arrived: arrived, off: l.unqueued, ww: w}
			c.enqueue(ctx, q, l.key, shared)
		}
	}
	entry, waited, err := c.local.claim(ctx, l.key, shared, b.mode == blockNoWait, deadline, w, &h.entry, long)
	if entry == nil {
		return nil, c.stoppedOr(err)
	}
	if waited && q == nil && time.Duration(monoNow()-arrived) > queueAfter {
		// Granted as its queueAfter ran out, before long ran.
		q = &queuePlace{arrived: arrived, off: l.unqueued, ww: w}
		c.enqueue(ctx, q, l.key, shared)
	}
	done := false
	defer func() {
		if !done {
			c.local.free(l.key, entry)
		}
	}()

	if !known {
		if err := c.register(ctx, l); err != nil {
			return nil, c.stoppedOr(err)
		}
	}
	if b.mode == blockNoWait || ((q == nil || q.tk == nil) && !c.busy.recent(l.key)) {
		ok, err := c.try(tryCtx, h)
		if err != nil {
			return nil, c.stoppedOr(err)
		}
		if ok {
			done = true
			return h, nil
		}
		c.busy.mark(l.key)
		if b.mode == blockNoWait {
			return nil, nil
		}
	}
	waited = true
	if q == nil {
		q = &queuePlace{arrived: arrived, off: l.unqueued, ww: w}
	}
	ok, err := c.wait(ctx, h, deadline, q)
	if !ok {
		return nil, c.stoppedOr(err)
	}
	done = true
	return h, nil
}

// advanceFence records h's token in pgcoord.fences (Config.Fencing). It
// runs on the control session, which holds no named lock, detached from
// ctx (a cancelled statement would close that session): it may wait for an
// application transaction that guarded a write with the previous token.
func (c *Coordinator) advanceFence(ctx context.Context, h *hold) error {
	err := c.onControl(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return c.q.AdvanceFence(ctx, conn, db.AdvanceFenceParams{Key: h.key, Token: h.token})
	})
	if err != nil {
		return fmt.Errorf("pgcoord: recording fencing token of %q: %w", h.lock.full, err)
	}
	return nil
}

// lockTableFull types the server's "out of shared memory" (53200), which
// for lock statements means its lock table is full.
func lockTableFull(err error) error {
	if isOutOfSharedMemory(err) {
		return fmt.Errorf("%w: %w", ErrLockTableFull, err)
	}
	return err
}

// isOutOfSharedMemory reports whether err is the server's "out of shared
// memory" (SQLSTATE 53200).
func isOutOfSharedMemory(err error) bool {
	if err == nil {
		// Every try asks (lockTableFull): errors.As's target would escape,
		// an allocation per Acquire for nothing.
		return false
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53200"
}

// stoppedOr turns the cancellation caused by Stop into ErrNotStarted.
func (c *Coordinator) stoppedOr(err error) error {
	if err != nil && !c.running() {
		return ErrNotStarted
	}
	return err
}

// try takes h's key on its lock session in one round trip, without
// waiting: (true, nil) when granted, with h recorded on the session.
func (c *Coordinator) try(ctx context.Context, h *hold) (bool, error) {
	s := c.lockSession(h.key)
	op := &h.op
	op.h, op.unlock = h, false
	// runTry returns when ctx ends, even if the server is silent.
	if err := s.runTry(ctx, op); err != nil {
		return false, err
	}
	if errors.Is(op.err, ErrTooManyConnections) && s != c.lockSs[0] {
		// The server is short of connection slots: carry on with the
		// lock session that is open.
		c.lockRefused.mark()
		s = c.lockSs[0]
		if err := s.runTry(ctx, op); err != nil {
			return false, err
		}
	}
	if errors.Is(op.err, errLeaseExpired) {
		// The connection was dropped under the try (see addHold): once
		// more, on a new one.
		if err := s.runTry(ctx, op); err != nil {
			return false, err
		}
	}
	if op.err != nil || op.token == 0 {
		return false, op.err
	}
	h.token = op.token
	return true, nil
}

// lockSession returns the lock session for key: always the same one while
// it can be open, so that a name's unlock and its next try in this process
// queue on one session in order. A session that is not open while sessions
// were refused lately (connection slots short) is passed over for the
// first, which Start opened: a try there may find the name still held by
// an unlock queued elsewhere (Config.AsyncRelease), and then just waits.
func (c *Coordinator) lockSession(key int64) *session {
	s := c.lockSs[uint64(key)%uint64(len(c.lockSs))]
	if s != c.lockSs[0] && s.raw.Load() == nil && c.lockRefused.recent() {
		return c.lockSs[0]
	}
	return s
}

// register makes sure l's name owns its key in the registry, for a name not
// known to be registered (see nameCache.lookup). It runs on the
// control session, which holds no named lock, detached from ctx: an insert
// stalled behind a table lock, or given up by its caller, costs no hold
// anything.
func (c *Coordinator) register(ctx context.Context, l *Lock) error {
	var got string
	args := db.RegisterLockNameParams{Key: l.key, Name: l.full}
	op := &ctlOp{key: l.key, kind: ctlRegister}
	op.queue = func(b *pgx.Batch) {
		b.Queue(db.RegisterLockName, args.Key, args.Name).QueryRow(func(row pgx.Row) error {
			// No row: a concurrent first registration (see single),
			// which runs again on its own.
			op.again = row.Scan(&got) != nil
			return nil
		})
	}
	op.single = func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		for range 3 {
			got, err = c.q.RegisterLockName(ctx, conn, args)
			// A concurrent first registration of the same name: no row
			// (it committed after this snapshot), or a unique violation on
			// the name (ON CONFLICT arbitrates on the key only). Either
			// way, the next try finds its row.
			var pgErr *pgconn.PgError
			if !errors.Is(err, pgx.ErrNoRows) && !(errors.As(err, &pgErr) && pgErr.Code == "23505") {
				break
			}
		}
		return err
	}
	err := c.ctlDo(ctx, op)
	if err != nil {
		return fmt.Errorf("pgcoord: registering lock name %q: %w", l.full, err)
	}
	if got != l.full {
		return collision(l, got)
	}
	c.names.add(l.key, l.full)
	return nil
}

// collision is the error of l, whose key is registered to the name other.
func collision(l *Lock, other string) error {
	return fmt.Errorf("%w: %q and %q both hash to key %d", ErrKeyCollision, l.full, other, l.key)
}
