package pgcoord

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
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

// get returns a wait session, waiting up to within for a free slot if
// MaxWaitSessions are in use; (nil, nil) when none freed up in time.
func (p *waitPool) get(ctx context.Context, within time.Duration) (*session, error) {
	select {
	case p.slots <- struct{}{}:
	default:
		timer := time.NewTimer(within)
		defer timer.Stop()
		select {
		case p.slots <- struct{}{}:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
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
			_ = s.close(context.Background(), ErrLockLost)
		}()
	}
}

// stop ends the pool's life and returns every wait session, for Stop.
func (p *waitPool) stop() []*session {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	return p.all()
}

// all returns every wait session, idle or in use.
func (p *waitPool) all() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]*session(nil), p.idle...)
	for s := range p.used {
		out = append(out, s)
	}
	return out
}

// slotPoll is how often a waiter queued for a wait session (all
// MaxWaitSessions in use) tries its lock without waiting.
const slotPoll = 100 * time.Millisecond

// waitSession gets a wait session for h. While all MaxWaitSessions are in
// use it tries the lock on a lock session every slotPoll, so a lock freed
// meanwhile is taken (then it returns nil and h is held), and it gives up
// at deadline (nil, nil). This polling is the degraded mode of a coordinator
// with too many waited-for locks held at once; raise MaxWaitSessions to
// avoid it.
func (c *Coordinator) waitSession(ctx context.Context, h *hold, deadline time.Time) (*session, error) {
	for {
		within := slotPoll
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, nil
			}
			within = min(within, left)
		}
		s, err := c.waits.get(ctx, within)
		if s != nil || err != nil {
			return s, err
		}
		if ok, err := c.try(ctx, h); ok || err != nil {
			return nil, err
		}
	}
}

// wait waits on the server for h's key on a wait session until granted
// (true), deadline passes (false, nil) or ctx ends (false, ctx.Err()).
func (c *Coordinator) wait(ctx context.Context, h *hold, deadline time.Time) (bool, error) {
	s, err := c.waitSession(ctx, h, deadline)
	if s == nil {
		return h.token != 0, err
	}
	for {
		slice := waitSlice
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				c.waits.put(s, true)
				return false, nil
			}
			slice = min(slice, left)
		}
		err := s.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			tok, err := c.q.WaitLock(ctx, conn, db.WaitLockParams{Key: h.key, TimeoutMs: int32(max(slice.Milliseconds(), 1))})
			if err != nil || tok == 0 {
				return err
			}
			// The server starts counting the session idle when the wait
			// ends, which may be a whole slice after it was sent: the
			// lease runs from now, not from the send.
			s.heardAt(monoNow())
			h.token = tok
			return c.addHold(s, h)
		})
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
	}
}
