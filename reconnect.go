package pgcoord

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// The control session's reconnect: the heartbeat starts it when a beat
// finds the control session broken (heartbeat.go), and it redials with
// jittered exponential backoff until it works or Stop.

// reconnect redials the control session until it works or Stop, then
// retakes the member lock and rewrites the member row.
//
// A caller that finds the control session reconnecting (its Acquire or
// Campaign could not open a session on the current server, see
// reconnectSoon) cuts the wait short: the backoff paces background
// retries, not a service that wants its lock now.
func (c *Coordinator) reconnect() {
	bo := c.reconnectBackoff()
	c.kick.drain() // asks from before this reconnect are answered by its first try
	for attempt := 1; ; attempt++ {
		wait := bo.NextBackOff()
		timer := time.NewTimer(wait)
		select {
		case <-c.runCtx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-c.kick.asked():
			timer.Stop()
		}
		err := c.reconnectOnce()
		if err == nil {
			c.stats.reconnects.Add(1)
			c.log.Info("pgcoord: reconnected", slog.Int("attempt", attempt))
			return
		}
		c.log.Warn("pgcoord: reconnect failed", slog.Int("attempt", attempt),
			slog.Duration("after", wait), slog.Any("err", err))
	}
}

// reconnectKickEvery is the least time between two reconnect attempts that
// callers ask for (reconnectSoon), across all callers of a coordinator: a
// crowd of goroutines retrying Acquire every millisecond during an outage
// costs the server at most one connection attempt per interval.
const reconnectKickEvery = 100 * time.Millisecond

// reconnectKick is how callers ask the control session's reconnect to try
// at once. The zero value is ready.
type reconnectKick struct {
	once sync.Once
	ch   chan struct{} // buffered 1: asks made during an attempt make one more
	last atomic.Int64  // unix nanos of the last ask let through
}

func (k *reconnectKick) asked() chan struct{} {
	k.once.Do(func() { k.ch = make(chan struct{}, 1) })
	return k.ch
}

func (k *reconnectKick) drain() {
	select {
	case <-k.asked():
	default:
	}
}

// reconnectSoon asks a reconnect under way to try now rather than at the
// end of its backoff wait, at most once per reconnectKickEvery. It is
// called when a caller could not open a session (the server is gone, or a
// new primary is up while the control session is still on the old one):
// without it the first Acquire after a failover waits out a backoff that
// grew through the outage, up to MaxReconnectBackoff (seconds to a minute
// after the new primary took writes). It never blocks, and does nothing
// when no reconnect is under way (the ask is dropped when one starts).
func (c *Coordinator) reconnectSoon() {
	now := time.Now().UnixNano()
	last := c.kick.last.Load()
	if now-last < int64(reconnectKickEvery) || !c.kick.last.CompareAndSwap(last, now) {
		return
	}
	select {
	case c.kick.asked() <- struct{}{}:
	default:
	}
}

// reconnectNow is reconnectSoon without its rate limit, for a session
// that has just connected: the server is back, so the reconnect should try
// at once.
func (c *Coordinator) reconnectNow() {
	c.kick.last.Store(time.Now().UnixNano())
	select {
	case c.kick.asked() <- struct{}{}:
	default:
	}
}

// reconnectBackoff waits about InitialReconnectBackoff, then twice as long
// each time up to MaxReconnectBackoff, each wait jittered by ±50% so members
// cut off together do not reconnect in lockstep; it never gives up.
func (c *Coordinator) reconnectBackoff() *cappedBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = c.cfg.InitialReconnectBackoff
	bo.MaxInterval = c.cfg.MaxReconnectBackoff
	bo.RandomizationFactor = 0.5
	bo.Multiplier = 2
	bo.MaxElapsedTime = 0 // forever, until Stop
	bo.Reset()
	return &cappedBackOff{bo}
}

// cappedBackOff keeps jittered waits at or under MaxInterval:
// ExponentialBackOff caps the interval before jitter, so alone it waits up
// to 1.5 × MaxInterval, more than the user's MaxReconnectBackoff. Above
// about 195 years, 1.5 × the interval overflows in ExponentialBackOff's
// float-to-Duration conversion and comes out negative (on amd64): a wait of
// nothing, a reconnect without backoff. Such a wait is taken as the cap.
type cappedBackOff struct{ *backoff.ExponentialBackOff }

// NextBackOff returns the next wait, never above MaxInterval nor negative.
func (b *cappedBackOff) NextBackOff() time.Duration {
	d := b.ExponentialBackOff.NextBackOff()
	if d < 0 || d > b.MaxInterval {
		return b.MaxInterval
	}
	return d
}

func (c *Coordinator) reconnectOnce() error {
	ctx, cancel := context.WithTimeout(c.runCtx, c.opTimeout())
	defer cancel()
	s := c.control
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	if s.closed {
		return ErrNotStarted
	}
	if s.conn != nil {
		s.broken(errors.New("pgcoord: control session replaced"))
	}
	if err := s.dial(ctx, true); err != nil {
		return err
	}
	if err := c.registerMemberLocked(ctx, s.conn, false); err != nil {
		s.broken(err)
		return err
	}
	c.rejoinGroups(ctx, s.conn)
	c.restampQueue(ctx, s.conn)
	c.lastBeat.Store(time.Now().UnixNano())
	c.active.Store(true)
	c.reconnMu.Lock()
	close(c.reconnected)
	c.reconnected = make(chan struct{})
	c.reconnMu.Unlock()
	return nil
}
