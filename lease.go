package pgcoord

import (
	"context"
	"fmt"
	"time"
)

// The lease. The server ends a session that stays idle for SessionTimeout
// (idle_session_timeout) and frees its locks, whatever the client thinks.
// The client therefore treats a hold as good only while its session was
// heard from (a statement on it succeeded, timed from when it was sent)
// within the lease, SessionTimeout less two heartbeats. The lease is looked
// at by the heartbeat, and also by every look a holder takes (Lost, Token,
// Synchronized's ctx): after a pause (SIGSTOP, a stalled VM) nothing orders
// the heartbeat goroutine before the application's, and the monotonic
// clock has jumped across the pause, so the first look after it already
// finds the lease run out.

// lease is how long a session may go unheard before its holds are lost.
func (c *Coordinator) lease() time.Duration {
	return c.cfg.SessionTimeout - 2*c.cfg.HeartbeatInterval
}

// leaseExpired reports whether s has not been heard from within the lease.
func (s *session) leaseExpired() bool {
	return time.Duration(monoNow()-s.heard.Load()) > s.c.lease()
}

// checkLease ends the holds of s when its lease ran out. It never waits for
// the session: a statement hung on a dead network cannot keep a hold alive
// past the point where the server may free it.
func (s *session) checkLease() {
	gen := s.gen.Load()
	if s.leaseExpired() || s.c.beatBound(s) {
		s.expire(gen)
	}
}

// expire ends connection gen of s for its lease: no hold may be added to it
// from now on, every hold on it is reported lost (before anyone else can be
// granted the locks: the server frees them only when the session ends), and
// its socket is closed so that the server frees them now rather than at
// idle_session_timeout, or never if the session is alive but stalled. A
// connection without holds is left alone: nothing relies on it, and it
// proves itself alive or dead with its next statement.
func (s *session) expire(gen uint64) {
	c := s.c
	c.mu.Lock()
	if s.gen.Load() != gen || len(s.holds) == 0 {
		// A newer connection (its lease starts afresh), or nothing to lose.
		c.mu.Unlock()
		return
	}
	s.expiredGen = gen
	lost := c.endHoldsLocked(s, fmt.Errorf("%w: %s session (or, for a leader, its member's heartbeat) not heard from within the lease (SessionTimeout %v less two heartbeats)",
		ErrLockLost, s.kind, c.cfg.SessionTimeout))
	c.mu.Unlock()
	c.signalHoldsLost(s, lost)
	s.forceClose(gen)
}

// lookLease is a holder's look at h's lease: when it ran out, h (and every
// hold on its session) is lost now, before the look returns. So is a hold
// that another goroutine (the heartbeat, a statement that found the session
// broken) has just ended as lost but not yet signalled: the look completes
// the signal (signalLost runs once; a second caller waits for the first),
// so that no look sees a hold live that is already ended.
func (c *Coordinator) lookLease(h *hold) {
	// h.sess is written once, by addHold, before the hold is handed out.
	if s := h.sess; s != nil {
		s.checkLease()
	}
	c.mu.Lock()
	cause := h.cause
	c.mu.Unlock()
	if cause != nil {
		h.signalLost(cause)
	}
}

// leaseCtx is the ctx Synchronized gives its function: Err and Done look
// at the lease of every hold first, so the function's first look after a
// pause that outlasted the lease already reports the loss (its cause is
// ErrLockLost), whether or not the heartbeat has run since.
type leaseCtx struct {
	context.Context
	c     *Coordinator
	holds []*hold
}

// Err looks at the leases, then returns the ctx's error.
func (x *leaseCtx) Err() error {
	x.look()
	return x.Context.Err()
}

// Done looks at the leases, then returns the ctx's channel.
func (x *leaseCtx) Done() <-chan struct{} {
	x.look()
	return x.Context.Done()
}

func (x *leaseCtx) look() {
	for _, h := range x.holds {
		x.c.lookLease(h)
	}
}
