package pgcoord

import (
	"context"
	"errors"
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
	// flushArmed is when flush was last armed (monoNow): the queued
	// unlocks go by then plus asyncReleaseDelay at the latest.
	flushArmed int64
	// abandoned says an op of the batch being run was abandoned (see
	// abandon): its leader looks for grants to give back only then.
	abandoned bool
}

// enqueue resets op's results and queues it on s for the next batch. It
// reports whether the caller must lead that batch (none is in progress).
//
// op's wake channel is made only when op joins a batch led by another
// goroutine: an op that leads its own batch is never woken (lead skips
// self, and passLead looks only at ops queued after the batch was taken),
// and the uncontended path, where every op leads, then allocates none.
// runTry, whose op waits for a goroutine it starts, makes its own.
func (s *session) enqueue(op *lockOp) (lead bool) {
	op.lead = false
	op.token, op.released, op.skipped, op.ran, op.err = 0, false, false, false, nil
	op.finished, op.abandoned = false, false
	s.bmu.Lock()
	s.batch.queue = append(s.batch.queue, op)
	lead = !s.batch.leading
	s.batch.leading = true
	if !lead && op.wake == nil {
		op.wake = make(chan struct{}, 1)
	}
	s.bmu.Unlock()
	return lead
}

// run queues op on s and returns once it has run. Lock sessions ignore the
// caller's cancellation (see doLocked), so nor does a queued op. An op may be
// run again once run returns: its wake channel is left empty.
func (s *session) run(op *lockOp) {
	lead := s.enqueue(op)
	if !lead {
		<-op.wake
		if !op.lead {
			return
		}
	}
	s.lead(op)
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
	var undo []*hold // (nil, no allocation, unless a try was abandoned)
	if s.batch.abandoned {
		s.batch.abandoned = false
		for _, op := range ops {
			if op.abandoned && !op.unlock && op.err == nil && op.token != 0 {
				undo = append(undo, op.h)
			}
		}
	}
	if undo == nil {
		// (Before the wakes: the next batch's leader runs first.)
		s.passLead()
	}
	for _, op := range ops {
		op.finished = true
		if !op.abandoned && op != self && !op.async {
			op.wake <- struct{}{}
		}
	}
	// The next leader swaps the queue under bmu: ops's array is free again.
	clear(ops)
	s.batch.spare = ops[:0]
	s.bmu.Unlock()
	if undo != nil {
		s.undoGrants(undo)
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
	if stmtErr.drop != nil {
		// A hold of the batch was refused (see sendBatch): the connection
		// goes now, before the reruns below, which then run on a new one.
		s.dropConn(stmtErr.drop)
	}
	// One statement failed (the server's lock table full, say), and a
	// batch's later statements are skipped after an error. The ops that ran
	// stand (a try that succeeded holds its lock: repeating it would take
	// the lock twice); each of the others runs on its own, so each gets its
	// own outcome and no unlock is left undone.
	failed := true
	for _, op := range ops {
		if op.ran || op.skipped {
			continue
		}
		// Only the first op that did not run is the failed statement:
		// the server skipped the later ones, which took nothing. A shared
		// try's undo closes the session (see undoTry), so undoing a try
		// that never ran lost every hold on it (TestSkippedSharedTryKeepsSession).
		undo := failed && !op.unlock
		failed = false
		op.err = s.doLocked(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
			if undo && conn == stmtErr.conn {
				// The failed statement may have been this try, and may
				// have taken its lock before failing. (On a new
				// connection it holds nothing.)
				if err := s.undoTry(ctx, conn, op.h); err != nil {
					return err
				}
			}
			return s.runOne(ctx, conn, op)
		})
	}
}

// runOne runs a single op as one statement.
func (s *session) runOne(ctx context.Context, conn *pgx.Conn, op *lockOp) error {
	if op.unlock {
		if op.skipped = !op.async && s.c.holdEnded(op.h); op.skipped {
			return nil
		}
		var err error
		op.released, err = s.unlockOn(ctx, conn, op.h)
		if markerFailed(err) && !conn.IsClosed() {
			op.released = true // the unlock ran (see markerFailed)
			return nil
		}
		if err != nil && !conn.IsClosed() {
			// Retried now, an async unlock too, before the batch's later
			// ops run: one of them may be this process's next try of the
			// key, which takes it afresh, and a retry after that would
			// free the new hold's lock.
			if s.retryUnlock(ctx, conn, op.h) {
				op.released = true
				return nil
			}
			s.dropForUnlock(conn, op.h, err)
		}
		return err
	}
	op.token = 0 // a try run again (see doLocked) must not keep an earlier token
	tok, err := s.tryOn(ctx, conn, op.h)
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
	for _, op := range ops {
		op.token, op.released, op.skipped, op.ran, op.err = 0, false, false, false, nil
		if op.unlock {
			op.skipped = !op.async && s.c.holdEnded(op.h)
		}
	}
	sent, err := s.sendHotBatch(ctx, conn, ops)
	if !sent {
		err = s.sendPgxBatch(ctx, conn, ops)
	}
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
	if err != nil {
		if refused {
			// The connection is dropped by runBatch, once this returns.
			// Dropped here, it would make doLocked send the whole batch
			// again on a new one, and the tries recorded above, whose
			// holds the lease's expiry then ended, would take their locks
			// again for holds already reported lost, which Release never
			// unlocks (TestRefusedHoldInFailedBatch).
			return &batchStmtError{err: err, conn: conn, drop: conn}
		}
		return &batchStmtError{err: err, conn: conn}
	}
	if refused {
		// As in runOne; the batch is not run again (its unlocks ran), the
		// refused tries are (see Coordinator.try).
		s.dropConn(conn)
	}
	return nil
}

// sendPgxBatch sends ops, but for those skipped, as one pgx batch with
// sqlc's statements, and records their results; it returns the batch's
// first error. After an error, the later ops' results are not read (ran
// stays false).
func (s *session) sendPgxBatch(ctx context.Context, conn *pgx.Conn, ops []*lockOp) error {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(ops))}
	for _, op := range ops {
		if op.skipped {
			continue
		}
		if op.unlock {
			b.Queue(op.h.unlockSQL(), op.h.key).QueryRow(func(row pgx.Row) error {
				err := row.Scan(&op.released)
				op.ran = err == nil
				if markerFailed(err) {
					// The unlock ran (see markerFailed): the op is done,
					// and is not run again on its own (a second unlock
					// would find the key free and report it lost).
					op.ran, op.released = true, true
				}
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
	return conn.SendBatch(ctx, b).Close()
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
