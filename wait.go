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
}

func (p *waitPool) init(c *Coordinator, max int) {
	p.c = c
	p.slots = make(chan struct{}, max)
	p.used = map[*session]struct{}{}
}

// get returns a wait session, waiting for a free slot if MaxWaitSessions are
// in use.
func (p *waitPool) get(ctx context.Context) (*session, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
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
	keep := reuse && len(p.idle) < maxIdleWaitSessions && p.c.running()
	if keep {
		p.idle = append(p.idle, s)
	}
	p.mu.Unlock()
	<-p.slots
	if !keep {
		p.closing.Add(1)
		go func() {
			defer p.closing.Done()
			// Not under the caller's locks: close takes the session's sem,
			// which the caller may hold (a break found mid-statement).
			_ = s.close(context.Background(), ErrLockLost)
		}()
	}
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

// wait waits on the server for h's key on a wait session until granted
// (true), deadline passes (false, nil) or ctx ends (false, ctx.Err()).
func (c *Coordinator) wait(ctx context.Context, h *hold, deadline time.Time) (bool, error) {
	s, err := c.waits.get(ctx)
	if err != nil {
		return false, err
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
