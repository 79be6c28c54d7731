package pgcoord

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// waitSlice is the longest one server-side wait lasts. A waiting statement
// holds a snapshot, which holds back VACUUM and CREATE INDEX CONCURRENTLY;
// waiting in slices bounds that, at the cost of one round trip a second.
const waitSlice = time.Second

// maxIdleWaitSessions is how many wait sessions stay open while unused, so a
// burst of contention does not pay a connect for every wait.
const maxIdleWaitSessions = 2

// waitPool hands out wait sessions: each waits for one lock and then holds
// it until Release, so a waiter's connection never carries another hold.
type waitPool struct {
	c *Coordinator
	// slots caps the wait sessions in use (waiting or holding).
	slots chan struct{}

	mu   sync.Mutex
	idle []*session
	used map[*session]struct{}
	// refused remembers a wait session refused for want of connection
	// slots: waits go beyond the budget for a while instead.
	refused refusal
	// closing counts sessions being closed in the background; Stop waits
	// for them so that no connection outlives it.
	closing sync.WaitGroup
	// stopped is set by stop: no session is handed out or closed by the
	// pool after it, since Stop closes every session the pool had then.
	stopped bool
}

func (p *waitPool) init(c *Coordinator, max int) {
	p.c = c
	p.slots = make(chan struct{}, max)
	p.used = map[*session]struct{}{}
}

// tryGet returns a wait session if the budget has one free now; nil when
// all the budget's wait sessions are in use, or none is open and one was refused for
// want of connection slots lately.
func (p *waitPool) tryGet() (*session, error) {
	select {
	case p.slots <- struct{}{}:
		return p.take()
	default:
		return nil, nil
	}
}

// take returns a wait session for a slot the caller has taken; nil (and
// the slot given back) when a new one would be needed and sessions were
// refused lately.
func (p *waitPool) take() (*session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		<-p.slots
		return nil, ErrNotStarted
	}
	var s *session
	if n := len(p.idle); n > 0 {
		s = p.idle[n-1]
		p.idle = p.idle[:n-1]
	} else if p.refused.recent() {
		<-p.slots
		return nil, nil
	} else {
		s = newSession(p.c, sessionWait)
	}
	p.used[s] = struct{}{}
	return s, nil
}

// put gives s back. A session whose connection may be unsound (reuse false)
// is closed instead of kept idle.
func (p *waitPool) put(s *session, reuse bool) {
	p.mu.Lock()
	if _, ok := p.used[s]; !ok {
		p.mu.Unlock()
		return
	}
	delete(p.used, s)
	if p.stopped {
		// Stop's snapshot has s and closes it.
		p.mu.Unlock()
		<-p.slots
		return
	}
	keep := reuse && len(p.idle) < maxIdleWaitSessions
	if keep {
		s.idleSince = monoNow()
		p.idle = append(p.idle, s)
	} else {
		// Added under mu, before stop can set stopped: Stop's Wait sees it.
		p.closing.Add(1)
	}
	p.mu.Unlock()
	<-p.slots
	if !keep {
		go func() {
			defer p.closing.Done()
			// Not under the caller's locks: close takes the session's sem,
			// which the caller may hold (a break found mid-statement).
			_, _ = s.close(context.Background(), ErrLockLost)
		}()
	}
}

// idleWaitSessionMax is how long a wait session stays open unused: after
// contention the coordinator goes back to its two sessions (see
// Config.MaxSessions).
const idleWaitSessionMax = 5 * time.Second

// reap closes the wait sessions unused for idleWaitSessionMax (the
// heartbeat calls it).
func (p *waitPool) reap() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	kept := p.idle[:0]
	var old []*session
	for _, s := range p.idle {
		if time.Duration(monoNow()-s.idleSince) > idleWaitSessionMax {
			old = append(old, s)
		} else {
			kept = append(kept, s)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.closing.Add(len(old))
	p.mu.Unlock()
	for _, s := range old {
		go func() {
			defer p.closing.Done()
			_, _ = s.close(context.Background(), ErrLockLost)
		}()
	}
}

// interruptLight ends the statements that run under no context on the
// pool's sessions (see waitWatch), for Stop.
func (p *waitPool) interruptLight() {
	for _, s := range p.all() {
		s.interruptLight()
	}
}

// stop ends the pool's life and returns every wait session, for Stop. The
// snapshot is taken under the lock that sets stopped: a put between the
// two, seeing stopped, drops its session from used without closing it (the
// snapshot's, it trusts, does), and a snapshot taken after it missed that
// session, whose connection outlived Stop (found by reading; the window is
// a few instructions wide).
func (p *waitPool) stop() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	return p.allLocked()
}

// all returns every wait session, idle or in use.
func (p *waitPool) all() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allLocked()
}

// allLocked is all, called with mu held.
func (p *waitPool) allLocked() []*session {
	out := append([]*session(nil), p.idle...)
	for s := range p.used {
		out = append(out, s)
	}
	return out
}

// wait waits for h's key until granted (true), deadline passes (false,
// nil) or ctx ends (false, ctx.Err()): on a wait session while the budget
// has one, else beyond the budget (waitFar) until one frees up.
//
// q is the wait's place in the key's queue across coordinators (queue.go):
// a wait on a wait session takes its ticket when its first slice
// (queueAfter) ends, a wait beyond the budget at once; a wait that is not at the head waits for its turn
// off the server, its wait session given back.
func (c *Coordinator) wait(ctx context.Context, h *hold, deadline time.Time, q *queuePlace) (bool, error) {
	var s *session
	var err error
	// far is the subscription to the key's releases of the waits beyond
	// the budget, kept from the first 100 ms to the wait at the head of
	// the queue that follows (see waitFar), and ended when the wait moves
	// to a wait session or waits for its turn.
	var far *subscription
	// farSub is called before every waitFar, so the wait is counted
	// beyond the budget (Stats.WaitsBeyondBudget) here, once, however
	// many phases it makes there.
	counted := false
	farSub := func() *subscription {
		if !counted {
			counted = true
			c.stats.farWaits.Add(1)
		}
		if far == nil {
			far = c.notifier.subscribe(topicFree, h.key)
		}
		return far
	}
	// dropFar ends the subscription, and with it (the last on the key)
	// the wait marker that makes every release of the key anywhere send
	// NOTIFY: a wait that moved to a wait session, or that waits for its
	// turn in the queue, is not woken by releases.
	dropFar := func() {
		if far != nil {
			c.notifier.unsubscribe(far)
			far = nil
		}
	}
	defer dropFar()
	for {
		if q.tk != nil && !q.head {
			if ok, err := c.awaitTurn(ctx, q, deadline); !ok {
				return false, err
			}
		}
		if s == nil {
			s, err = c.waits.tryGet()
		}
		if err != nil {
			return false, err
		}
		if s == nil {
			if q.tk == nil {
				// Beyond the budget too, the first queueAfter of a
				// wait costs no ticket (see queue.go).
				first := time.Now().Add(queueAfter - time.Duration(monoNow()-q.arrived))
				if deadline.IsZero() || first.Before(deadline) {
					ok, moved, ferr := c.waitFar(ctx, h, first, farSub())
					if ok || ferr != nil {
						return ok, ferr
					}
					if moved {
						dropFar()
						s, err = c.waits.take()
						continue
					}
				}
				c.enqueue(ctx, q, h.key, h.shared)
				if !q.head {
					// Not its turn: it waits for the queue, not for
					// releases.
					dropFar()
					continue
				}
			}
			ok, moved, ferr := c.waitFar(ctx, h, deadline, farSub())
			if !moved {
				return ok, ferr
			}
			dropFar()
			s, err = c.waits.take()
			continue
		}
		ok, err := c.waitOn(ctx, s, h, deadline, q)
		if errors.Is(err, errNotMyTurn) {
			s = nil // given back: the wait waits for its turn
			continue
		}
		var dialErr *dialError
		if !errors.Is(err, ErrTooManyConnections) && !errors.As(err, &dialErr) || ctx.Err() != nil {
			return ok, err
		}
		// The session could not be opened: the server is short of
		// connection slots, or too busy to answer a dial within its
		// attempt's bound (make fleet: 150 acquires in 15 s failed with a
		// wait session's dial timeout). Wait beyond the budget instead.
		c.waits.refused.mark()
		s, err = nil, nil
	}
}

// waitOn waits on the server for h's key on the wait session s.
func (c *Coordinator) waitOn(ctx context.Context, s *session, h *hold, deadline time.Time, q *queuePlace) (bool, error) {
	// The wait's start, for held_locks.since: pg_locks only knows the
	// current slice's.
	began := monoNow()
	var endWait func()
	var waitPID int32
	defer func() {
		if endWait != nil {
			endWait()
		}
	}()
	// The lease of a granted wait runs from when the wait was sent (see
	// below), so a slice must end well within it.
	maxSlice := min(waitSlice, c.lease()/2)
	for {
		slice := maxSlice
		if q.tk == nil {
			slice = min(slice, queueAfter) // see queue.go
		}
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				c.waits.put(s, true)
				return false, nil
			}
			slice = min(slice, left)
		}
		err := s.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			if s.backendPID != waitPID { // the first slice, or a new connection
				if endWait != nil {
					endWait()
				}
				waitPID = s.backendPID
				endWait = c.waitBegan(h.key, waitPID, began)
			}
			sctx := ctx
			if q.ww.light(slice) {
				// The first slice of most waits: no context to make and
				// watch (see waitWatch).
				if !s.beginLight() {
					return ErrNotStarted
				}
				defer s.endLight()
				sctx = context.Background()
			}
			sent := monoNow()
			tok, err := c.waitOnce(sctx, s, conn, h, int32(max(slice.Milliseconds(), 1)))
			if err != nil || tok == 0 {
				return err
			}
			// The lease runs from when the wait was sent, as for any
			// statement (doLocked records that send), not from when its
			// grant was read: a process frozen between the server's grant
			// and its read of the reply (SIGSTOP, a stalled VM) may find,
			// when it resumes, that the server ended the idle session and
			// someone else took the lock. (The server's idle clock starts
			// at the grant, later than the send: the lease stays on the
			// safe side.) A grant older than the lease is given back by
			// closing the connection, and the wait goes on, on a new one.
			if time.Duration(monoNow()-sent) > c.lease() {
				s.dropConn(conn)
				return errLeaseExpired
			}
			h.token = tok
			err = c.addHold(s, h)
			if err != nil {
				// Refused, the grant is no hold: doLocked's rerun of this
				// wait on a new connection may end its slice unserved, and
				// a token left here would make waitOn report it granted
				// (TestStaleWaitGrantNotHeld).
				h.token = 0
			}
			if errors.Is(err, errLeaseExpired) {
				s.dropConn(conn) // see runOne; doLocked waits again
			}
			return err
		})
		if errors.Is(err, errLeaseExpired) && ctx.Err() == nil {
			continue // the grant was given back (see above): wait again
		}
		if err != nil {
			// A cancelled wait closed its connection, and with it any grant
			// that raced the cancel, so the session is not reused.
			c.waits.put(s, false)
			if ctxErr := ctx.Err(); ctxErr != nil {
				return false, ctxErr
			}
			return false, err
		}
		if h.token != 0 {
			return true, nil
		}
		if q.tk == nil {
			// The first slice ended: from here on the server's queue no
			// longer keeps this wait's place (see queue.go).
			c.enqueue(ctx, q, h.key, h.shared)
			if !q.head {
				c.waits.put(s, true)
				return false, errNotMyTurn
			}
		}
	}
}
