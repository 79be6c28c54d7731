package pgcoord

// Tries whose caller's ctx can end: the caller stops waiting for its op at
// once, and an op given up on is taken off the queue or, if it was already
// sent, its grant is given back (see runTry).

import (
	"context"
)

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
		// Woken even when it leads: the batch runs in another goroutine.
		op.wake = make(chan struct{}, 1)
	}
	lead := s.enqueue(op)
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
	s.batch.abandoned = true
	return true
}

// undoGrants gives back the locks that abandoned tries took (see runTry),
// before the lead passes on; called by the leader of the batch that took
// them, which has not passed the lead yet. Their holds end, unseen by
// anyone, and their unlocks go first in the queue, on holds of their own
// (an abandoned hold's Lost channel belongs to its Lock's next hold), so
// they run before any statement queued meanwhile.
//
// First, not after: the abandoned caller's claim was freed when it gave
// up, so the name's next try in this process may be queued already. Were
// it sent before the undo, and its batch failed on another statement, its
// rerun's undoTry would unlock the key until the server reports it free,
// freeing the abandoned grant's level too, take the key again, and the undo
// would then free the new hold's level: Acquire true, the server holding
// nothing (TestAbandonedGrantUndoneFirst).
func (s *session) undoGrants(undo []*hold) {
	c := s.c
	us := make([]*lockOp, 0, len(undo))
	c.mu.Lock()
	for _, h := range undo {
		if h.ended {
			continue // lost with its session, which freed the lock
		}
		h.ended = true
		delete(s.holds, h)
		c.stats.held.Add(-1)
		u := &hold{lock: h.lock, key: h.key, shared: h.shared, lost: make(chan struct{})}
		u.op.h, u.op.unlock, u.op.async = u, true, true
		us = append(us, &u.op)
	}
	c.mu.Unlock()
	s.bmu.Lock()
	s.batch.queue = append(us, s.batch.queue...)
	s.passLead()
	s.bmu.Unlock()
}
