package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// lockOp is one try or unlock queued on a lock session. Concurrent callers
// on one session are served together: whoever finds no batch in progress
// leads, sends every queued op as one pipelined batch (one round trip for
// all of them), and hands the results out. This is group commit: under load
// a session does many ops per round trip; alone, an op costs what a single
// statement costs.
type lockOp struct {
	h      *hold
	unlock bool

	// Results, written by the leader before wake.
	token    int64 // try: the fencing token, 0 when busy
	released bool  // unlock: the session held the key
	skipped  bool  // unlock: the hold had ended, nothing was sent
	ran      bool  // the statement ran in a batch and its result was read
	err      error

	// wake is sent once the op has run, or when its goroutine must lead
	// the next batch (lead set).
	wake chan struct{}
	lead bool
	// async marks an unlock queued by Release under Config.AsyncRelease:
	// nobody waits for it, so it never leads, and it is sent even though
	// its hold has ended (that is how Release left it).
	async bool
	// finished is set, under bmu, once the op's results are in; abandoned,
	// under bmu, when its caller's ctx ended while it was being run (see
	// runTry): a lock it took is then given back.
	finished, abandoned bool
}

// batchQueue is a lock session's queue of ops waiting for the next batch.
type batchQueue struct {
	queue   []*lockOp
	leading bool
	// spare is the array of the last batch run, reused for the next queue.
	spare []*lockOp
	// flush sends async unlocks that found no statement to join within
	// asyncReleaseDelay; nil until the first one.
	flush *time.Timer
}

// run queues op on s and returns once it has run. Lock sessions ignore the
// caller's cancellation (see doLocked), so nor does a queued op. An op may be
// run again once run returns: its wake channel is left empty.
func (s *session) run(op *lockOp) {
	if op.wake == nil {
		op.wake = make(chan struct{}, 1)
	}
	op.lead = false
	op.token, op.released, op.skipped, op.ran, op.err = 0, false, false, false, nil
	op.finished, op.abandoned = false, false
	s.bmu.Lock()
	s.batch.queue = append(s.batch.queue, op)
	lead := !s.batch.leading
	s.batch.leading = true
	s.bmu.Unlock()
	if !lead {
		<-op.wake
		if !op.lead {
			return
		}
	}
	s.lead(op)
}

// runTry runs a try for a caller whose ctx can end: it returns ctx.Err()
// as soon as ctx ends, even on a session whose server has gone silent. A
// statement on a lock session cannot be cancelled (pgx would close the
// connection, and every hold on it), so such a caller never leads a batch
// in its own goroutine: a goroutine of its own does (one per batch, not
// per op), and the caller waits for the result or its ctx, whichever comes
// first. A try given up before it was sent is taken out of the queue; one
// given up while it runs is abandoned, and the lock it may take is given
// back at once (see lead). A ctx that cannot end (Done nil: the benchmark's
// context.Background) keeps the plain path, led in the caller's goroutine.
func (s *session) runTry(ctx context.Context, op *lockOp) error {
	done := ctx.Done()
	if done == nil {
		s.run(op)
		return nil
	}
	if op.wake == nil {
		op.wake = make(chan struct{}, 1)
	}
	op.lead = false
	op.token, op.released, op.skipped, op.ran, op.err = 0, false, false, false, nil
	op.finished, op.abandoned = false, false
	s.bmu.Lock()
	s.batch.queue = append(s.batch.queue, op)
	lead := !s.batch.leading
	s.batch.leading = true
	s.bmu.Unlock()
	for {
		if lead {
			if !s.c.bg.start() {
				// Stopping: the batch fails at once on the closed session.
				s.lead(op)
				return nil
			}
			go func() {
				defer s.c.bg.done()
				s.lead(nil)
			}()
			lead = false
		}
		select {
		case <-op.wake:
			if !op.lead {
				return nil
			}
			// Handed the lead: hand it to a goroutine (op stays queued
			// for it; abandon must not wait for a wake taken here).
			op.lead = false
			lead = true
		case <-done:
			if s.abandon(op) {
				return ctx.Err()
			}
			// Its results are in: the wake is there.
		}
	}
}

// abandon gives up op, whose caller's ctx ended, and reports whether it
// did: false when the op's results are in already.
func (s *session) abandon(op *lockOp) bool {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if op.finished {
		return false
	}
	for i, q := range s.batch.queue {
		if q != op {
			continue
		}
		// Not sent yet: it never will be.
		s.batch.queue = append(s.batch.queue[:i], s.batch.queue[i+1:]...)
		if op.lead {
			// The lead was handed to op: drain its wake and hand it on.
			<-op.wake
			op.lead = false
			s.passLead()
		}
		return true
	}
	// In the batch being run: the leader gives back what it takes.
	op.abandoned = true
	return true
}

// undoGrant gives back the lock that an abandoned try took (see runTry):
// its hold ends, unseen by anyone, and its unlock is queued as an
// asynchronous one, on a hold of its own (the abandoned hold's Lost
// channel belongs to its Lock's next hold).
func (s *session) undoGrant(h *hold) {
	c := s.c
	c.mu.Lock()
	if h.ended {
		c.mu.Unlock()
		return // lost with its session, which freed the lock
	}
	h.ended = true
	delete(s.holds, h)
	c.stats.held.Add(-1)
	c.mu.Unlock()
	u := &hold{lock: h.lock, key: h.key, shared: h.shared, lost: make(chan struct{})}
	u.op.h = u
	s.runAsync(&u.op)
}

// lead runs one batch: every op queued so far, self included. It then passes
// the lead to the first op queued meanwhile, so no goroutine serves others
// for longer than its own batch.
func (s *session) lead(self *lockOp) {
	s.sem <- struct{}{}
	s.bmu.Lock()
	ops := s.batch.queue
	s.batch.queue = s.batch.spare[:0]
	s.bmu.Unlock()

	s.running = ops
	s.runBatch(ops)
	s.running = nil
	s.checkAsync(ops)
	<-s.sem

	s.bmu.Lock()
	s.passLead()
	var undo []*hold // (nil, no allocation, unless a try was abandoned)
	for _, op := range ops {
		op.finished = true
		switch {
		case op.abandoned:
			if !op.unlock && op.err == nil && op.token != 0 {
				undo = append(undo, op.h)
			}
		case op != self && !op.async:
			op.wake <- struct{}{}
		}
	}
	// The next leader swaps the queue under bmu: ops's array is free again.
	clear(ops)
	s.batch.spare = ops[:0]
	s.bmu.Unlock()
	for _, h := range undo {
		s.undoGrant(h)
	}
}

// passLead hands the lead to the first waiting op queued, or, when only
// async unlocks are queued, to a new goroutine that sends them now (they
// have waited a batch already); called with bmu held.
func (s *session) passLead() {
	for _, op := range s.batch.queue {
		if !op.async {
			op.lead = true
			op.wake <- struct{}{}
			return
		}
	}
	if len(s.batch.queue) > 0 {
		if s.c.bg.start() {
			go func() {
				defer s.c.bg.done()
				s.lead(nil)
			}()
			return
		}
		// Stop has closed the session, which freed their locks.
		clear(s.batch.queue)
		s.batch.queue = s.batch.queue[:0]
	}
	s.batch.leading = false
}

// runAsync queues the unlock of a hold that Release has already ended
// (Config.AsyncRelease) and returns at once. The unlock joins the next batch
// on s, or leaves on its own after asyncReleaseDelay.
func (s *session) runAsync(op *lockOp) {
	op.unlock, op.async = true, true
	s.bmu.Lock()
	defer s.bmu.Unlock()
	s.batch.queue = append(s.batch.queue, op)
	if s.batch.leading {
		return // the current leader hands it on (see passLead)
	}
	if s.batch.flush == nil {
		s.batch.flush = time.AfterFunc(asyncReleaseDelay, s.flushAsync)
	} else {
		s.batch.flush.Reset(asyncReleaseDelay)
	}
}

// flushAsync sends queued async unlocks that no statement has taken along.
func (s *session) flushAsync() {
	if !s.c.bg.start() {
		return // Stop has closed the session, which freed their locks
	}
	defer s.c.bg.done()
	s.bmu.Lock()
	if s.batch.leading || len(s.batch.queue) == 0 {
		s.bmu.Unlock()
		return
	}
	s.batch.leading = true
	s.bmu.Unlock()
	s.lead(nil)
}

// checkAsync deals with the outcome of async unlocks, whose Release has
// returned; called with sem held. An unlock that found its lock gone (the
// session broke, or the server did not hold it) may mean the hold was lost
// before Release, as a synchronous Release would have said: its Lost()
// closes now, late. An unlock that failed on a connection still open would
// leave a lock held by nobody, so the connection is dropped, which frees it
// (and reports the session's other holds lost).
func (s *session) checkAsync(ops []*lockOp) {
	for _, op := range ops {
		if !op.async || s.closed {
			continue
		}
		switch {
		case op.err == nil && !op.released:
			s.c.lostLate(op.h, fmt.Errorf("%w: the server no longer held %q when its asynchronous unlock ran", ErrLockLost, op.h.lock.full))
		case op.err != nil && (s.conn == nil || s.conn.IsClosed()):
			s.c.lostLate(op.h, fmt.Errorf("%w: the session of %q broke before its asynchronous unlock ran: %w", ErrLockLost, op.h.lock.full, op.err))
		case op.err != nil && s.retryUnlock(context.Background(), s.conn, op.h):
			// Released after all (see retryUnlock).
		case op.err != nil:
			s.c.log.Warn("pgcoord: asynchronous unlock failed; dropping its session", "lock", op.h.lock.full, "error", op.err)
			s.c.lostLate(op.h, fmt.Errorf("%w: the asynchronous unlock of %q failed: %w", ErrLockLost, op.h.lock.full, op.err))
			s.broken(fmt.Errorf("%w: an asynchronous unlock on this %s session failed: %w", ErrLockLost, s.kind, op.err))
		}
	}
}

// stopFlush stops the async-unlock timer, for close.
func (s *session) stopFlush() {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if s.batch.flush != nil {
		s.batch.flush.Stop()
	}
}

// runBatch sends ops as one batch; called with sem held.
func (s *session) runBatch(ops []*lockOp) {
	if len(ops) == 1 {
		// The common case alone costs no batch bookkeeping.
		op := ops[0]
		op.err = s.doLocked(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
			return s.runOne(ctx, conn, op)
		})
		return
	}
	err := s.doLocked(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
		return s.sendBatch(ctx, conn, ops)
	})
	if err == nil {
		return
	}
	var stmtErr *batchStmtError
	if !errors.As(err, &stmtErr) {
		// The session itself failed: every op fails with it.
		for _, op := range ops {
			op.err = err
		}
		return
	}
	// One statement failed (the server's lock table full, say), and a
	// batch's later statements are skipped after an error. The ops that ran
	// stand (a try that succeeded holds its lock: repeating it would take
	// the lock twice); each of the others runs on its own, so each gets its
	// own outcome and no unlock is left undone.
	for _, op := range ops {
		if op.ran || op.skipped {
			continue
		}
		op.err = s.doLocked(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
			if !op.unlock {
				// The failed statement may have been this try, and may
				// have taken its lock before failing.
				if err := s.undoTry(ctx, conn, op.h); err != nil {
					return err
				}
			}
			return s.runOne(ctx, conn, op)
		})
	}
}

// undoTry releases key on the session for as many times as a failed try may
// have taken it. The in-process claim on key means no hold of this process
// has it on this session, so nothing held is released by mistake.
//
// An unlock that fails on a connection that stays open would leave the lock
// taken by this session for nobody, so the connection is dropped instead
// (doLocked then reports the session's holds lost).
func (s *session) undoTry(ctx context.Context, conn *pgx.Conn, h *hold) error {
	key := h.key
	if h.shared {
		// Other readers of this process may hold key shared on this
		// session: an unlock cannot tell their levels from the failed
		// try's. Closing the session frees them all (they are reported
		// lost), and never leaves a level held for nobody.
		s.c.log.Warn("pgcoord: a shared try failed; closing its session, which frees what it may have taken", "session", s.kind.String())
		s.dropConn(conn)
		return fmt.Errorf("%w: a shared try of %q failed and its session was closed", ErrLockAcquireFailed, h.lock.full)
	}
	for range 3 {
		released, err := s.c.q.Unlock(ctx, conn, key)
		if err != nil {
			if !conn.IsClosed() {
				s.c.log.Warn("pgcoord: undoing a failed try failed; closing its session, which frees the lock", "session", s.kind.String(), "error", err)
				s.dropConn(conn)
			}
			return err
		}
		if !released {
			return nil
		}
	}
	return nil
}

// retryUnlock runs a plain unlock of key after an Unlock that failed on
// conn while it stayed open, and reports whether it ran. If it did, the key
// is not held by this session any more, whichever part of the failed
// statement ran: a full lock table fails Unlock's wait-marker try after its
// unlock (then this finds nothing to release), a cancel request may hit
// either. Waits beyond a budget for the key then miss their NOTIFY and are
// woken by the dead-holder check instead. If this fails too (a revoked
// privilege, a statement_timeout too short for any statement), the caller
// drops the connection. Called with sem held.
//
// A shared hold's unlock is not retried: if the failed statement's unlock
// ran, a second one would release another reader's level of the key on
// this session. Its connection is dropped instead.
func (s *session) retryUnlock(ctx context.Context, conn *pgx.Conn, h *hold) bool {
	if conn == nil || conn.IsClosed() || h.shared {
		return false
	}
	key := h.key
	if ctx.Done() == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.c.opTimeout())
		defer cancel()
	}
	_, err := s.c.q.UnlockPlain(ctx, conn, key)
	return err == nil
}

// dropForUnlock ends h as released and closes conn, on which h's unlock
// failed while the connection stayed open (a cancel request, a
// statement_timeout, a revoked privilege): left open, the session would
// hold the lock for nobody as long as it lives. Closing it frees the lock;
// the session's other holds go with it, and doLocked, seeing the connection
// closed, reports them lost. Called with sem held.
//
// The other unlocks of the batch being run (s.running) end the same way:
// closing the connection releases their locks too, so their Release
// succeeds rather than reporting a loss.
func (s *session) dropForUnlock(conn *pgx.Conn, h *hold, err error) {
	s.c.mu.Lock()
	drop := func(h *hold) {
		if !h.ended {
			h.ended, h.dropped = true, true
			delete(s.holds, h)
			s.c.stats.held.Add(-1)
		}
	}
	drop(h)
	for _, op := range s.running {
		if op.unlock && !op.async {
			drop(op.h)
		}
	}
	s.c.mu.Unlock()
	s.c.log.Warn("pgcoord: unlock failed; closing its session, which frees the lock",
		"lock", h.lock.full, "session", s.kind.String(), "error", err)
	s.dropConn(conn)
}

// dropConn closes conn, on which a statement just failed or must not be
// trusted; called with sem held, inside doLocked, which then sees the
// connection closed and treats the session as broken.
func (s *session) dropConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// batchStmtError marks a batch that failed on a statement while its
// connection stayed usable.
type batchStmtError struct{ err error }

func (e *batchStmtError) Error() string { return e.err.Error() }
func (e *batchStmtError) Unwrap() error { return e.err }

// runOne runs a single op as one statement.
func (s *session) runOne(ctx context.Context, conn *pgx.Conn, op *lockOp) error {
	if op.unlock {
		if op.skipped = !op.async && s.c.holdEnded(op.h); op.skipped {
			return nil
		}
		var err error
		op.released, err = s.c.unlockOn(ctx, conn, op.h)
		if err != nil && !conn.IsClosed() && !op.async {
			// (An async unlock's hold has ended already: checkAsync
			// deals with it.)
			if s.retryUnlock(ctx, conn, op.h) {
				op.released = true
				return nil
			}
			s.dropForUnlock(conn, op.h, err)
		}
		return err
	}
	op.token = 0 // a try run again (see doLocked) must not keep an earlier token
	tok, err := s.c.tryOn(ctx, conn, op.h)
	if err == nil {
		tok, err = s.finishToken(ctx, conn, tok)
	}
	if err != nil && !conn.IsClosed() {
		// A try that failed may still have taken the lock (the server's
		// lock table filling up as the statement ran): undo it, or the
		// session would keep a lock nobody holds.
		if uerr := s.undoTry(ctx, conn, op.h); uerr != nil {
			return uerr
		}
	}
	if err != nil || tok == 0 {
		return err
	}
	op.token = tok
	err = s.c.addHold(s, op.h)
	if errors.Is(err, errLeaseExpired) {
		// The lock this try took would outlive its reported loss: close
		// the connection, which frees it; doLocked runs the try again on a
		// new one.
		s.dropConn(conn)
	}
	return err
}

// sendBatch sends ops as one pipelined batch and reads their results.
// Unlocks of holds that ended meanwhile (lost with a broken connection,
// say) are skipped: their locks went with that connection.
func (s *session) sendBatch(ctx context.Context, conn *pgx.Conn, ops []*lockOp) error {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(ops))}
	for _, op := range ops {
		op.token, op.released, op.skipped, op.ran, op.err = 0, false, false, false, nil
		if op.unlock {
			if op.skipped = !op.async && s.c.holdEnded(op.h); op.skipped {
				continue
			}
			b.Queue(op.h.unlockSQL(), op.h.key).QueryRow(func(row pgx.Row) error {
				err := row.Scan(&op.released)
				op.ran = err == nil
				return err
			})
			continue
		}
		b.Queue(op.h.trySQL(), op.h.key).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&op.token)
			op.ran = err == nil
			return err
		})
	}
	err := conn.SendBatch(ctx, b).Close()
	if err != nil && conn.IsClosed() {
		// Every lock taken by this batch went with the connection.
		return err
	}
	for _, op := range ops {
		if op.ran && !op.unlock && op.token != 0 {
			var terr error
			if op.token, terr = s.finishToken(ctx, conn, op.token); terr != nil {
				// The connection is closed (see finishToken), and with it
				// every lock this batch took: the session failed, and
				// doLocked treats it so (its holds are reported lost,
				// which may include holds whose unlock ran in this batch:
				// told lost, never wrongly told held).
				return terr
			}
		}
	}
	refused := false
	for _, op := range ops {
		if op.ran && !op.unlock && op.token != 0 {
			op.err = s.c.addHold(s, op.h)
			refused = refused || errors.Is(op.err, errLeaseExpired)
		}
	}
	if refused {
		// As in runOne; the batch is not run again (its unlocks ran), the
		// refused tries are (see Coordinator.try).
		s.dropConn(conn)
	}
	if err != nil {
		return &batchStmtError{err}
	}
	return nil
}

// finishToken turns a try's token candidate (a plain nextval, see the
// TryLock query) into the hold's fencing token: the candidate itself when
// it is above the session's timeline floor, as it is on every try but the
// first ones of a new timeline; otherwise the token RaiseTokenFloor takes,
// while the lock is still held. 0 (busy) stays 0. If RaiseTokenFloor fails,
// the lock the try took must not stay on the session for nobody: an open
// connection is dropped, which frees it (doLocked reports the session's
// holds lost). Called with sem held.
func (s *session) finishToken(ctx context.Context, conn *pgx.Conn, candidate int64) (int64, error) {
	if candidate == 0 || candidate > s.tokenFloor {
		return candidate, nil
	}
	token, err := s.c.q.RaiseTokenFloor(ctx, conn)
	if err != nil && !conn.IsClosed() {
		s.dropConn(conn)
	}
	return token, err
}

// holdEnded reports whether h was released or lost.
func (c *Coordinator) holdEnded(h *hold) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return h.ended
}
