package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Hold bookkeeping: a hold is one acquisition of a lock, recorded on the
// session whose statement took it (addHold) until Release or loss. A loss
// ends every hold of a session at once (loseHolds) and tells each holder
// (Lost closed, loss callbacks run) before its in-process claim is freed.

// hold is one acquisition of a lock: it lives on one session until Release
// or loss.
type hold struct {
	lock *Lock
	key  int64
	// shared: a shared (read) hold, taken by AcquireShared; released with
	// pg_advisory_unlock_shared.
	shared bool
	sess   *session
	// entry is the hold's claim in the local table, kept here so that the
	// claim allocates nothing of its own.
	entry localEntry
	token int64
	// pid is the backend of the session's connection the hold lives on
	// (for tests and diagnostics).
	pid int32
	// gid is the goroutine that acquired it (see actorGoroutines).
	gid int64

	// op is the hold's try, then its unlock, on a lock session: one at a
	// time, so one op (and its wake channel) serves both.
	op lockOp

	lost     chan struct{}
	lostOnce sync.Once
	// The fields below are guarded by the coordinator's mu.
	ended bool
	cause error
	// dropped: released by closing its session, after its unlock failed
	// on a connection that stayed open (see session.dropForUnlock).
	dropped bool
	onLost  []func(error)
	// grantedAt is monoNow() at the grant; sinceRecorded is set once
	// sinceLoop wrote it to pgcoord.lock_since.
	grantedAt     int64
	sinceRecorded bool
}

// addHold records h on s, whose statement just took its lock. It refuses
// once Stop has begun (Stop releases every session's locks after it, so the
// server lock cannot outlive Stop), and on a connection whose lease was
// found run out (errLeaseExpired): its holds were reported lost and its
// socket is being closed, so a hold added now would be reported held while
// the server frees it. It refuses too when the statement that took the lock
// was sent longer than the lease ago (the process frozen between the
// server's reply and its read): the server may have ended the idle session
// meanwhile and given the lock to another member, and a session without
// holds had no expiry to record that (TestStaleTryGrantNotHeld). The caller
// then drops the connection itself (see session.dropConn), which frees the
// lock this statement took.
func (c *Coordinator) addHold(s *session, h *hold) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running() {
		return ErrNotStarted
	}
	if hook := testHookAddHold.Load(); hook != nil {
		c.mu.Unlock()
		(*hook)(s)
		c.mu.Lock()
	}
	now := monoNow()
	if s.expiredGen == s.gen.Load() || time.Duration(now-s.stmtSent) > c.lease() {
		return errLeaseExpired
	}
	h.sess, h.pid = s, s.backendPID
	s.holds[h] = struct{}{}
	c.stats.held.Add(1)
	h.grantedAt = now // for held_locks.since (see sinceLoop)
	return nil
}

// errLeaseExpired refuses a hold on a connection whose lease ran out while
// the statement that took the lock was under way.
var errLeaseExpired = fmt.Errorf("%w: the session's lease ran out as the lock was taken; try again", ErrLockAcquireFailed)

// testHookAddHold, when set by a test, runs in addHold before the lease
// test, so a test can make a lease run out at exactly that point.
var testHookAddHold atomic.Pointer[func(s *session)]

func (c *Coordinator) holdLost(h *hold) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return h.ended && h.cause != nil
}

// loseHolds ends every hold on s as lost: Lost channels close and
// loss callbacks run before the in-process claim is freed, so no other Lock
// of this process can take the name before its old holder was told.
func (c *Coordinator) loseHolds(s *session, cause error) {
	c.mu.Lock()
	lost := c.endHoldsLocked(s, cause)
	c.mu.Unlock()
	c.signalHoldsLost(s, lost)
}

// endHoldsLocked ends every hold on s with cause and returns them; called
// with c.mu held. signalHoldsLost must follow, without c.mu.
func (c *Coordinator) endHoldsLocked(s *session, cause error) []*hold {
	var lost []*hold
	for h := range s.holds {
		delete(s.holds, h)
		h.ended = true
		h.cause = cause
		lost = append(lost, h)
	}
	c.stats.held.Add(-int64(len(lost)))
	c.stats.lost.Add(uint64(len(lost)))
	return lost
}

// signalHoldsLost tells the holders of lost (just ended on s) and then frees
// their in-process claims.
func (c *Coordinator) signalHoldsLost(s *session, lost []*hold) {
	for _, h := range lost {
		h.signalLost(h.cause)
		c.local.free(h.key, &h.entry)
		if s.kind == sessionWait {
			c.waits.put(s, false)
		}
	}
	switch {
	case len(lost) == 0:
	case errors.Is(lost[0].cause, errStopped):
		// Stop with locks still held is a normal shutdown, not a fault to
		// warn about; Lost() still closes, since the sections are no
		// longer protected.
		c.log.Info("pgcoord: locks released by Stop", "count", len(lost), "session", s.kind.String())
	default:
		c.log.Warn("pgcoord: locks lost", "count", len(lost), "session", s.kind.String(), "cause", lost[0].cause)
	}
}

// awaitFreed waits until a lost hold's in-process claim is freed. loseHolds
// closes Lost() and runs the loss callbacks before it frees the claim (so no
// other Lock of this process takes the name before its holder was told);
// a holder that saw Lost() and at once released or acquired again would
// otherwise find its own name busy in that moment. The wait is short: only
// the callbacks (which cancel contexts) run in between.
func (h *hold) awaitFreed(ctx context.Context) error {
	return h.lock.c.local.awaitFreed(ctx, &h.entry)
}

// awaitFreed is h.awaitFreed for Release, which ignores ctx's cancellation
// but is bounded all the same.
func (c *Coordinator) awaitFreed(ctx context.Context, h *hold) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opTimeout())
	defer cancel()
	_ = h.awaitFreed(ctx)
}

func (h *hold) signalLost(cause error) {
	h.lostOnce.Do(func() {
		close(h.lost)
		for _, f := range h.onLost {
			f(cause)
		}
	})
}

// lostLate reports a hold already released under AsyncRelease as lost after
// all: its unlock found the lock gone, so it may have been lost before
// Release.
//
// It may be called more than once for a hold (when its session broke, and
// again when the queued unlock ran): the loss counts, and is signalled, once.
func (c *Coordinator) lostLate(h *hold, cause error) {
	c.mu.Lock()
	first := h.cause == nil
	if first {
		h.cause = cause
	}
	cause = h.cause
	c.mu.Unlock()
	if first {
		c.stats.lost.Add(1)
	}
	h.signalLost(cause)
}

// onLoss registers f to run when h is lost, or runs it now if h already was.
func (c *Coordinator) onLoss(h *hold, f func(error)) {
	c.mu.Lock()
	if !h.ended {
		h.onLost = append(h.onLost, f)
		c.mu.Unlock()
		return
	}
	cause := h.cause
	c.mu.Unlock()
	if cause != nil {
		f(cause)
	}
}

// unlock runs h's unlock on its session: batched with other ops on a lock
// session, on its own on a wait session. It does nothing for a hold that
// ended meanwhile. ctx's cancellation is ignored.
func (c *Coordinator) unlock(ctx context.Context, s *session, h *hold) (released bool, err error) {
	if s.kind == sessionLock {
		op := &h.op
		op.h, op.unlock = h, true
		s.run(op)
		return op.released, op.err
	}
	// The caller's cancellation must not cut the unlock short (pgx would
	// close the connection): it runs under the internal bound only. (A ctx
	// that cannot be cancelled is used as it is: WithoutCancel allocates.)
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.unlock()
	// One try, on the hold's own connection: if it broke, the hold went
	// with it (the break reports it lost), and a new connection would
	// have nothing to unlock. doLocked would dial one to run the unlock
	// again, and Release would wait for that dial (up to awaitGoneMax for
	// the old backend to exit, then the connect) for nothing.
	err = s.doLockedTries(ctx, 1, func(ctx context.Context, conn *pgx.Conn) error {
		if c.holdEnded(h) {
			return nil
		}
		var err error
		released, err = s.unlockOn(ctx, conn, h)
		if err != nil && !conn.IsClosed() {
			if s.retryUnlock(ctx, conn, h) {
				released = true
				return nil
			}
			s.dropForUnlock(conn, h, err)
		}
		return err
	})
	return released, err
}

// release unlocks h on its session and frees the in-process claim.
func (c *Coordinator) release(ctx context.Context, h *hold) error {
	c.mu.Lock()
	if h.ended {
		cause := h.cause
		c.mu.Unlock()
		if cause != nil {
			c.awaitFreed(ctx, h)
			return cause
		}
		return ErrNotHeld
	}
	s := h.sess
	if s.kind == sessionLock && c.cfg.AsyncRelease {
		// End the hold now; the unlock follows (see Config.AsyncRelease).
		// This process's next holder of the name queues its try on the
		// same session after the unlock, so it cannot overtake it.
		h.ended = true
		delete(s.holds, h)
		c.stats.held.Add(-1)
		c.mu.Unlock()
		h.op.h = h
		s.runAsync(&h.op)
		c.local.free(h.key, &h.entry)
		return nil
	}
	c.mu.Unlock()

	released, err := c.unlock(ctx, s, h)

	c.mu.Lock()
	if h.ended && h.dropped {
		// The unlock failed, and closing the session released the lock
		// instead: released all the same, once its backend has exited.
		c.mu.Unlock()
		c.awaitDropped(ctx, h.pid)
		c.local.free(h.key, &h.entry)
		if s.kind == sessionWait {
			c.waits.put(s, false)
		}
		return nil
	}
	if h.ended {
		// Lost meanwhile (the session broke): loseHolds did the bookkeeping.
		cause := h.cause
		c.mu.Unlock()
		if cause == nil {
			cause = ErrLockLost
		}
		c.awaitFreed(ctx, h)
		return cause
	}
	h.ended = true
	delete(s.holds, h)
	c.stats.held.Add(-1)
	if err == nil && !released {
		// The server says this session did not hold it: something unlocked it
		// behind our back (pg_advisory_unlock_all, DISCARD ALL).
		h.cause = fmt.Errorf("%w: the server no longer held %q", ErrLockLost, h.lock.full)
	}
	cause := h.cause
	if cause != nil {
		c.stats.lost.Add(1)
	}
	c.mu.Unlock()

	if cause != nil {
		h.signalLost(cause)
	}
	c.local.free(h.key, &h.entry)
	if s.kind == sessionWait {
		c.waits.put(s, err == nil)
	}
	if err != nil {
		return fmt.Errorf("pgcoord: releasing %q: %w", h.lock.full, err)
	}
	return cause
}
