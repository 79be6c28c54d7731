package pgcoord

// Unlocks under Config.AsyncRelease: queued by Release, sent with the
// session's next statement or on their own after AsyncReleaseDelay, their
// outcome dealt with after Release returned.

import (
	"fmt"
	"time"
)

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
	if len(s.batch.queue) > 1 {
		// The first unlock queued started the timer, which sends this
		// one too. Reset here, a steady stream of releases would put off
		// the send for as long as it lasts, every name held for nobody
		// meanwhile (TestAsyncReleaseStreamFlushes).
		return
	}
	s.batch.flushArmed = monoNow()
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
		case op.err != nil:
			s.c.log.Warn("pgcoord: asynchronous unlock failed; dropping its session", "lock", op.h.lock.full, "err", op.err)
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
