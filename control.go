package pgcoord

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// controlRole is what the control session adds to a session: it is shared
// by the heartbeat, the listener of waits beyond the budget, and every
// statement of the registry, fencing, elections, groups and semaphores, and
// it carries the member lock, so none of its statements may be cancelled
// (pgx would close the connection, and with it the member lock).
type controlRole struct {
	// listenMu guards listening, set while the control session waits for
	// a notification (see notifier) with a read deadline on its socket.
	// Whoever wants the session meanwhile moves that deadline to now, which
	// ends the wait (a timeout leaves a pgx connection usable); outside
	// the wait nobody may touch the deadline, or a statement would fail.
	listenMu  sync.Mutex
	listening bool
	// wanted counts goroutines waiting for sem of a control session; the
	// listener does not start a wait while it is non-zero.
	wanted atomic.Int32
}

// errControlReconnecting is the error of a statement on the control
// session while the heartbeat's reconnect has yet to replace its broken
// connection (only the reconnect may: it must retake the member lock).
var errControlReconnecting = errors.New("pgcoord: control session is reconnecting")

// interrupt ends the listener's wait for a notification, if one is under
// way (see listenMu).
func (s *session) interrupt() {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	if s.listening {
		if r := s.raw.Load(); r != nil {
			_ = r.SetReadDeadline(time.Now())
		}
	}
}

// detached runs fn on the session without letting ctx cancel the statement:
// on the control session a cancelled statement would close the connection
// and with it the member lock. The caller stops waiting when ctx ends; the
// statement runs on to its end, bounded by opTimeout.
func (s *session) detached(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	done := make(chan error, 1)
	go func() { done <- s.do(context.WithoutCancel(ctx), fn) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// onControl runs fn on the control session, detached from ctx (see
// session.detached). While the control session is being reconnected it
// waits for the reconnect, bounded by ctx and opTimeout, instead of failing
// at once: a name's registration or a fencing token must not fail an
// Acquire for a reconnect that takes a backoff and a dial.
func (c *Coordinator) onControl(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	var bound <-chan time.Time
	for {
		c.reconnMu.Lock()
		reconnected := c.reconnected
		c.reconnMu.Unlock()
		err := c.control.detached(ctx, fn)
		if !errors.Is(err, errControlReconnecting) {
			return err
		}
		c.reconnectSoon()
		if bound == nil {
			t := time.NewTimer(c.opTimeout())
			defer t.Stop()
			bound = t.C
		}
		select {
		case <-reconnected:
		case <-bound:
			return err
		case <-ctx.Done():
			return err
		case <-c.runCtx.Done():
			return err
		}
	}
}

// mayRedial reports whether do may replace a dead connection itself. The
// control session may only until it holds the member lock: after that a new
// connection must retake it, which is the heartbeat's reconnect's job. (Start
// can take longer than SessionTimeout, a first migration say, and the
// server ends sessions idle that long.)
func (s *session) mayRedial() bool {
	return s.kind != sessionControl || !s.c.registered.Load()
}

// opTimeout bounds one statement on a session when the caller's ctx has no
// deadline, so a black-holed connection cannot hang an Acquire or Release.
func (c *Coordinator) opTimeout() time.Duration {
	return 5*time.Second + 2*c.cfg.HeartbeatInterval
}
