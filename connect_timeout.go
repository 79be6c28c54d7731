package pgcoord

import (
	"context"
	"errors"
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
// session's reconnect) gives each attempt a short bound instead, and on an
// attempt that used it up tries again at once, the bound doubling as such
// attempts go on (see raiseDialLevel), up to the connect timeout, for as
// long as ctx allows; an attempt at the whole connect timeout is the last. Why: after a failover or a switchover, a
// connection made through a proxy that still routes to the old node is
// held there, unanswered, for as long as the proxy retries (HAProxy: its
// `timeout connect` and retries, about 2 s in make ha's harness, 4 s in
// Patroni's sample configuration) before the proxy closes it, while a new
// connection made a moment later reaches the new leader in milliseconds.
// Waiting the full timeout on the first one made the first Acquire after a
// planned switchover come 2.2-2.3 s after the new leader took writes
// (docs/ha.md). A slow but healthy server (a loaded one, a long TLS
// handshake) still gets connected: the bound grows until it is enough,
// costing that first redial the abandoned attempts.
//
// The level (the doublings) is the coordinator's, shared by its sessions,
// and a success sets it to the lowest level whose bound is twice what that
// connection took, so the next redial starts from what this server needs,
// not from a bound it already outgrew (nor from one an outage raised).
// Abandoned attempts raise it slowly (see raiseDialLevel). Only dials
// change: the statements of Acquire and Release are untouched.
func (c *Coordinator) dialSession(ctx context.Context, base *pgx.ConnConfig, kind sessionKind, redial bool) (*pgx.Conn, error) {
	if !redial {
		return c.hooks.dial(ctx, base, c.sessionTag)
	}
	full := base.ConnectTimeout
	for {
		level := c.dialLevel.Load()
		bound := attemptBound(level, full)
		began := time.Now()
		conn, capped, err := c.hooks.dialWithin(ctx, base, c.sessionTag, bound)
		if err == nil {
			c.dialLevel.Store(levelFor(2 * time.Since(began)))
			c.dialStall.Store(0)
			return conn, nil
		}
		// An attempt that ran out of its own bound (not ctx's, nor the
		// connect timeout's) is tried again at once with a longer one.
		if !capped || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		c.raiseDialLevel(level, bound)
		c.log.Info("pgcoord: connection attempt abandoned; trying again at once, with longer",
			slog.String("session", kind.String()), slog.Duration("bound", bound), slog.Any("err", err))
	}
}

// raiseDialLevel raises the level after an attempt at level (given bound)
// was abandoned, once the attempts have been abandoned for twice that
// bound since the level was last raised (or since the first abandoned
// attempt after a success): 250 ms attempts for 0.5 s, then 500 ms ones
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
