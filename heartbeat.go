package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
)

// heartbeatLoop beats every HeartbeatInterval until Stop. When the control
// session breaks it reconnects with jittered exponential backoff, forever;
// IsActive is false meanwhile. Sessions holding locks are checked on every
// beat, including while reconnecting, so a dead session's holders learn of
// the loss within about one interval.
func (c *Coordinator) heartbeatLoop() {
	defer close(c.hbDone)
	ticker := time.NewTicker(c.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-c.runCtx.Done():
			return
		case <-ticker.C:
		}
		if err := c.beat(c.runCtx); err != nil && c.runCtx.Err() == nil {
			c.active.Store(false)
			c.log.Warn("pgcoord: heartbeat failed; reconnecting", slog.Any("err", err))
			c.reconnect(ticker)
		}
	}
}

// Heartbeat sends one heartbeat now: it refreshes last_heartbeat with the
// database clock and checks every session that holds locks. It returns an
// error when the control session cannot reach the backend.
func (c *Coordinator) Heartbeat(ctx context.Context) error {
	if !c.running() {
		return ErrNotStarted
	}
	return c.beat(ctx)
}

// beat runs one heartbeat; each part is bounded by one interval so a stalled
// network cannot delay the next beat.
func (c *Coordinator) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HeartbeatInterval)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range c.checkedSessions() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.check(ctx)
		}()
	}
	err := c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		n, err := c.q.Heartbeat(ctx, conn, c.memberID)
		if err == nil && n == 0 {
			// The row was deleted or marked stopped by hand: write it back,
			// since other members judge liveness by it.
			return c.registerMemberLocked(ctx, conn, false)
		}
		return err
	})
	wg.Wait()
	if err != nil {
		return fmt.Errorf("pgcoord: heartbeat: %w", err)
	}
	c.lastBeat.Store(time.Now().UnixNano())
	c.active.Store(true)
	return nil
}

// checkedSessions are the sessions each beat checks: every lock and wait
// session.
func (c *Coordinator) checkedSessions() []*session {
	return append(append([]*session(nil), c.lockSs...), c.waits.all()...)
}

// reconnect redials the control session until it works or Stop, then
// retakes the member lock and rewrites the member row.
func (c *Coordinator) reconnect(ticker *time.Ticker) {
	bo := c.reconnectBackoff()
	for attempt := 1; ; attempt++ {
		wait := bo.NextBackOff()
		timer := time.NewTimer(wait)
		select {
		case <-c.runCtx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		err := c.reconnectOnce()
		if err == nil {
			c.stats.reconnects.Add(1)
			c.log.Info("pgcoord: reconnected", slog.Int("attempt", attempt))
			ticker.Reset(c.cfg.HeartbeatInterval)
			return
		}
		c.log.Warn("pgcoord: reconnect failed", slog.Int("attempt", attempt),
			slog.Duration("after", wait), slog.Any("err", err))
		// Holders must still learn of losses while the backend is away.
		ctx, cancel := context.WithTimeout(c.runCtx, c.cfg.HeartbeatInterval)
		for _, s := range c.checkedSessions() {
			s.check(ctx)
		}
		cancel()
	}
}

// reconnectBackoff waits InitialReconnectBackoff, then twice as long each
// time up to MaxReconnectBackoff, each wait jittered by ±50% so members cut
// off together do not reconnect in lockstep; it never gives up.
func (c *Coordinator) reconnectBackoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = c.cfg.InitialReconnectBackoff
	bo.MaxInterval = c.cfg.MaxReconnectBackoff
	bo.RandomizationFactor = 0.5
	bo.Multiplier = 2
	bo.MaxElapsedTime = 0 // forever, until Stop
	bo.Reset()
	return bo
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
	if err := s.dial(ctx); err != nil {
		return err
	}
	if err := c.registerMemberLocked(ctx, s.conn, false); err != nil {
		s.broken(err)
		return err
	}
	c.lastBeat.Store(time.Now().UnixNano())
	c.active.Store(true)
	return nil
}
