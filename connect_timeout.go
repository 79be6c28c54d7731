package pgcoord

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultConnectTimeout bounds each connection attempt (TCP, TLS and the
// server's startup reply, per host) when the connection string sets no
// connect_timeout (nor PGCONNECT_TIMEOUT): without it, a server that accepts
// the connection and never answers would hang Start, a reconnect or Migrate
// for as long as TCP keeps the socket, which is forever on a live network.
// Ten seconds is long enough for a loaded server's TLS handshake and short
// enough that a black-holed server fails Start (with the dial's error,
// wrapping a *pgconn.ConnectError) instead of hanging. Connections opened
// again after Start begin with shorter attempts (see dialSession); their
// last one has the whole bound.
const DefaultConnectTimeout = 10 * time.Second

// withConnectTimeout fills in DefaultConnectTimeout when cc has none.
func withConnectTimeout(cc *pgx.ConnConfig) {
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
}

// firstAttemptBound is the time the first attempt of a redial is given to
// set its connection up (TCP, TLS, the server's startup reply, per host),
// when no earlier connection here showed that setup takes longer (see
// dialSession). A server on the same network answers in milliseconds, and
// HAProxy's checks run every few hundred.
const firstAttemptBound = 250 * time.Millisecond

// maxAttemptLevel caps Coordinator.dialLevel: firstAttemptBound << 8 is
// over a minute, past any connect timeout worth waiting for.
const maxAttemptLevel = 8

// attemptBound is the time an attempt at level gets: firstAttemptBound,
// doubled per level, never more than full (the connection's own
// ConnectTimeout).
func attemptBound(level int32, full time.Duration) time.Duration {
	return min(firstAttemptBound<<min(max(level, 0), maxAttemptLevel), full)
}

// levelFor is the lowest level whose bound is at least d.
func levelFor(d time.Duration) int32 {
	level := int32(0)
	for level < maxAttemptLevel && firstAttemptBound<<level < d {
		level++
	}
	return level
}

// dialSession opens a session's connection. At Start (redial false) it is
// one attempt with the whole connect timeout: there is nothing yet to tell
// a stuck connection from a slow server by, and a bad setting must fail
// Start with the dial's own error (TestStartBoundedAgainstSilentServer).
//
// A redial (a caller's Acquire or Campaign opening a session, the control
// session's reconnect) does not wait for one attempt alone: once the
// newest attempt has taken a short bound without connecting, it starts
// another beside it, the bound doubling as such attempts go on (see
// raiseDialLevel), and takes whichever connects first, closing the others;
// at most maxDialAttempts are in flight, the oldest given up for a new one.
// Why: after a failover or a switchover, a connection made through a proxy
// that still routes to the old node is held there, unanswered, for as long
// as the proxy retries (HAProxy: its `timeout connect` and retries, about
// 2 s in make ha's harness, 4 s in Patroni's sample configuration) before
// the proxy closes it, while a new connection made a moment later reaches
// the new leader in milliseconds. Waiting the full timeout on the first one
// made the first Acquire after a planned switchover come 2.2-2.3 s after
// the new leader took writes (docs/ha.md). And an attempt that is merely
// slow (a just-promoted leader busy for a few hundred milliseconds, a
// loaded server, a long TLS handshake) goes on and connects at its own
// pace, where giving it up for a new attempt, as redials did before, paid
// the bounds of the attempts given up (a server 400 ms away connected
// after 1.15 s: three attempts of 250 ms given up, then one of 500 ms).
// Every attempt has the whole connect timeout; the newest one decides
// failure: its error (a refusal, a standby, the timeout) ends the redial,
// and the older ones with it, as when it was the only attempt; an older
// attempt's error only takes it out of the race. After an attempt with
// the whole connect timeout as its bound, no other starts.
//
// The level (the doublings) is the coordinator's, shared by its sessions,
// and a success sets it to the lowest level whose bound is twice what that
// connection took, so the next redial starts from what this server needs,
// not from a bound it already outgrew (nor from one an outage raised).
// Slow attempts raise it slowly (see raiseDialLevel). Only dials change:
// the statements of Acquire and Release are untouched.
//
// A wait session is dialled once, within the current attempt bound, and a
// dial that takes longer fails (the wait counts it as a refusal and waits
// beyond the budget for refusalPause, see wait): a wait session is
// capacity a wait can do without, not a session the coordinator must have
// back, and its dials come from many waits of many coordinators whenever
// the server shows a free slot. Raced, such dials on a saturated server
// became up to three connection attempts each, a backend forked for every
// one (make fleet with 43 coordinators, room for a few wait sessions: 661
// connections received and 158 authorized in 10 s, and a third of the
// rate of 44 coordinators with no room); dialled once but with the whole
// connect timeout, slow dials that landed late let more wait sessions in
// at once than the headroom's second look closed before the application's
// next connection (TestWaitSessionDialOnce).
func (c *Coordinator) dialSession(ctx context.Context, base *pgx.ConnConfig, kind sessionKind, redial bool) (*pgx.Conn, error) {
	if !redial {
		return c.hooks.dial(ctx, base, c.sessionTag)
	}
	if kind == sessionWait {
		return c.dialWaitSession(ctx, base)
	}
	full := base.ConnectTimeout
	type result struct {
		id    int
		began time.Time
		conn  *pgx.Conn
		err   error
	}
	type attempt struct {
		id     int
		cancel context.CancelFunc
	}
	results := make(chan result)
	var inFlight []attempt // oldest first, not given up
	newest, started, pending := 0, 0, 0
	var newestBegan time.Time
	start := func() {
		started++
		pending++
		id := started
		actx, cancel := context.WithCancel(ctx)
		inFlight = append(inFlight, attempt{id: id, cancel: cancel})
		newest, newestBegan = id, time.Now()
		began := newestBegan
		go func() {
			conn, _, err := c.hooks.dialWithin(actx, base, c.sessionTag, 0)
			results <- result{id: id, began: began, conn: conn, err: err}
		}()
	}
	defer func() {
		// The attempts still in flight are given up; one that connects
		// meanwhile is closed.
		for _, a := range inFlight {
			a.cancel()
		}
		if n := pending; n > 0 {
			go func() {
				for range n {
					if r := <-results; r.conn != nil {
						_ = r.conn.Close(context.Background())
					}
				}
			}()
		}
	}()
	drop := func(id int) {
		for i, a := range inFlight {
			if a.id == id {
				a.cancel()
				inFlight = append(inFlight[:i], inFlight[i+1:]...)
				return
			}
		}
	}
	start()
	last := false // the newest attempt's bound is the whole connect timeout
	for {
		level := c.dialLevel.Load()
		bound := attemptBound(level, full)
		var slow <-chan time.Time
		var timer *time.Timer
		if !last {
			if bound >= full {
				last = true
			} else {
				timer = time.NewTimer(bound - time.Since(newestBegan))
				slow = timer.C
			}
		}
		select {
		case r := <-results:
			pending--
			drop(r.id)
			if r.err == nil {
				c.dialConnected(r.began)
				return r.conn, nil
			}
			if r.id == newest {
				return nil, r.err
			}
		case <-slow:
			// The newest attempt took its bound: another starts beside
			// it, the oldest given up if there are too many.
			c.raiseDialLevel(level, bound)
			if len(inFlight) >= maxDialAttempts {
				drop(inFlight[0].id)
			}
			c.log.Info("pgcoord: connection attempt slow; another started beside it",
				slog.String("session", kind.String()), slog.Duration("bound", bound))
			start()
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// dialWaitSession dials a wait session once, within the attempt bound (see
// dialSession). The bound follows the server as a redial's does: a dial
// that took it without connecting raises the level (raiseDialLevel, so a
// server that always takes longer than 250 ms gets its wait sessions after
// a few refusalPauses), and one that connects sets it from what it took.
func (c *Coordinator) dialWaitSession(ctx context.Context, base *pgx.ConnConfig) (*pgx.Conn, error) {
	level := c.dialLevel.Load()
	bound := attemptBound(level, base.ConnectTimeout)
	began := time.Now()
	conn, capped, err := c.hooks.dialWithin(ctx, base, c.sessionTag, bound)
	if err == nil {
		c.dialConnected(began)
		return conn, nil
	}
	if capped && ctx.Err() == nil && time.Since(began) >= bound {
		c.raiseDialLevel(level, bound)
	}
	return nil, err
}

// dialConnected sets the level after a dial that connected, begun at
// began: the lowest whose bound is twice what it took, so the next dial
// starts from what this server needs (see dialSession).
func (c *Coordinator) dialConnected(began time.Time) {
	c.dialLevel.Store(levelFor(2 * time.Since(began)))
	c.dialStall.Store(0)
}

// maxDialAttempts bounds the attempts of one redial in flight at once (see
// dialSession).
const maxDialAttempts = 3

// raiseDialLevel raises the level after an attempt at level took its
// bound without connecting, once attempts have been slow so for twice that
// bound since the level was last raised (or since the first slow attempt
// after a success): 250 ms attempts for 0.5 s, then 500 ms ones
// for 1 s, 1 s ones for 2 s, and so on, however many sessions abandon
// attempts at once. Why not at each abandoned attempt: a proxy can hold
// every connection made for as long as a switchover takes (make ha at
// load 17: the old primary stopped 2.5 s before the new leader took
// writes), and doubling at each attempt had reached 2 s by then; the
// attempt in flight when the proxy routed to the new leader was stuck
// for that long, and the first acquire came 2.07 s after the new leader
// took writes (goal 1.75 s). Now the bound is about a third of the time
// the stall has lasted: 1 s until 3.75 s into it.
func (c *Coordinator) raiseDialLevel(level int32, bound time.Duration) {
	now := monoNow()
	since := c.dialStall.Load()
	if since == 0 {
		c.dialStall.CompareAndSwap(0, now)
		return
	}
	if level >= maxAttemptLevel || time.Duration(now-since) < 2*bound {
		return
	}
	if c.dialLevel.CompareAndSwap(level, level+1) {
		c.dialStall.Store(now)
	}
}
