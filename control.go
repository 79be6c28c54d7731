package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// first counts goroutines waiting for sem ahead of the others (the
	// heartbeat: see lockFirst); unlock hands sem to one of them over
	// handoff, without releasing it.
	first   atomic.Int32
	handoff chan struct{}
}

// lockFirst is lock ahead of every goroutine that waits in lock: the
// member row's update (see startMemberBeat), which waits one interval for
// the control session and must not queue behind every statement submitted
// before it. Queued so, an application's burst of control statements
// longer than an interval (Election.Leader from many goroutines) made every
// beat give up its place and queue again at the back the next beat: the
// heartbeat never ran, IsActive went false and a leader lost its term at
// the lease, while the session answered all along
// (TestControlQueueDoesNotStarveHeartbeat). Control session only.
func (s *session) lockFirst(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	default:
	}
	s.wanted.Add(1)
	defer s.wanted.Add(-1)
	s.interrupt()
	s.first.Add(1)
	defer s.first.Add(-1)
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-s.handoff:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
		s.readDeadlineNow()
	}
}

// readDeadlineNow ends the read s's connection is blocked in (the
// listener's wait for a notification, a statement's reply), if it has a
// connection; the caller makes sure a read is under way that may be ended
// (see listenMu, lightMu).
func (s *session) readDeadlineNow() {
	if r := s.raw.Load(); r != nil {
		_ = r.SetReadDeadline(time.Now())
	}
}

// detached runs fn on the control session for a caller, as one statement
// (or a few) that may be repeated: registry, fencing, elections, groups,
// semaphores, retention. Three rules keep the control session, which
// carries the member's liveness, safe from its callers and its callers
// safe from it:
//
//   - ctx never cancels the statement: on the control session a cancelled
//     statement closes the connection, and with it the member lock (the
//     member would leave live_members and every group). The caller stops
//     waiting when ctx ends; the statement runs on to its end, bounded by
//     opTimeout, in a goroutine Stop waits for.
//   - No statement waits on a lock an application controls: the control
//     connection runs with a short lock_timeout (see controlLockTimeout),
//     and a statement refused for it (SQLSTATE 55P03) is run again after a
//     pause, for as long as ctx allows, with the session free in between,
//     so the heartbeat and the listener keep their turns however long an
//     application's transaction holds a fence row.
//   - A statement that finds the connection broken waits for the
//     heartbeat's reconnect (only the reconnect may replace it: it must
//     retake the member lock), bounded by ctx and opTimeout, and runs again
//     on the new connection: a primitive that has won its lock never fails
//     for a reconnect that takes a backoff and a dial.
func (s *session) detached(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	return s.detachedLoop(ctx, fn, s.detachedOnce)
}

// rerun tells a write run by detached whether it runs again after a run on
// a connection that broke: that run may have committed, its reply lost with
// the connection, so a write that is not safe to repeat must take "already
// done" for done (LeaveGroup's missing row, BeginTerm's own term). A run
// again on the same connection (after a lock_timeout) follows one that
// failed, and does not count.
type rerun struct {
	last  *pgx.Conn
	after bool
}

// on notes a run on conn.
func (r *rerun) on(conn *pgx.Conn) {
	if r.last != nil && r.last != conn {
		r.after = true
	}
	r.last = conn
}

// detachedSync is detached for a caller that runs in the background
// itself (see ctlFlush): it returns only once fn has, so that fn's results
// are the caller's to read. ctx still never cancels the statement.
func (s *session) detachedSync(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	return s.detachedLoop(ctx, fn, func(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return s.do(context.WithoutCancel(ctx), fn)
	})
}

// detachedLoop runs fn with once until it need not run again (see
// detached).
func (s *session) detachedLoop(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error,
	once func(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error) error {
	c := s.c
	var bound <-chan time.Time
	pause := controlLockTimeoutPause
	for {
		c.reconnMu.Lock()
		reconnected := c.reconnected
		c.reconnMu.Unlock()
		err := once(ctx, fn)
		switch {
		case errors.Is(err, errControlReconnecting):
			if !isOwnWork(ctx) {
				c.reconnectSoon()
			}
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
		case isLockTimeout(err):
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w (the statement waits for a lock held by another transaction: %w)", ctx.Err(), err)
			case <-c.runCtx.Done():
				t.Stop()
				return ErrNotStarted
			}
			pause = min(2*pause, 10*controlLockTimeoutPause)
		default:
			return err
		}
	}
}

// ownWorkKey marks a context as the coordinator's own work (see
// ownWork).
type ownWorkKey struct{}

// ownWork marks ctx as the coordinator's own work, which no caller
// waits for: a statement of it that finds the control session
// reconnecting waits for the reconnect without asking it to try at once
// (reconnectSoon). Only a caller who wants a lock now may cut the backoff
// short; the coordinator's periodic writes, retried every beat, would
// otherwise turn the backoff into a connection attempt every
// reconnectKickEvery against a server that is down.
func ownWork(ctx context.Context) context.Context {
	return context.WithValue(ctx, ownWorkKey{}, true)
}

// isOwnWork says whether ctx is marked by ownWork.
func isOwnWork(ctx context.Context) bool {
	return ctx.Value(ownWorkKey{}) != nil
}

// detachedOnce runs fn once on the session, detached from ctx (see
// detached).
func (s *session) detachedOnce(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.c.bg.start() {
		return ErrNotStarted
	}
	done := make(chan error, 1)
	go func() {
		defer s.c.bg.done()
		done <- s.do(context.WithoutCancel(ctx), fn)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// onControl runs fn on the control session (see session.detached).
func (c *Coordinator) onControl(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	return c.control.detached(ctx, fn)
}

// controlLockTimeout is the control connection's lock_timeout: the longest
// one of its statements waits for a lock before it is refused and run
// again (see detached). A fifth of a heartbeat, at most 200ms: the
// heartbeat, waiting for the session meanwhile, still beats well within its
// interval.
func (c *Coordinator) controlLockTimeout() time.Duration {
	return max(min(c.cfg.HeartbeatInterval/5, 200*time.Millisecond), time.Millisecond)
}

// controlLockTimeoutPause is the first pause before a statement refused
// for a lock runs again; pauses double up to ten times as long.
const controlLockTimeoutPause = 10 * time.Millisecond

// prepareControl bounds lock waits on a new control connection (see
// detached). The setting is the session's own: nothing else uses the
// connection.
func (c *Coordinator) prepareControl(ctx context.Context, conn *pgx.Conn) error {
	ms := strconv.FormatInt(c.controlLockTimeout().Milliseconds(), 10)
	if err := c.q.SetLockTimeout(ctx, simpleProtocol{conn}, ms); err != nil {
		return fmt.Errorf("pgcoord: setting lock_timeout: %w", err)
	}
	return nil
}

// isLockTimeout reports a statement refused by lock_timeout (or NOWAIT):
// SQLSTATE 55P03, lock_not_available. The statement did nothing.
func isLockTimeout(err error) bool {
	if err == nil {
		return false // as isOutOfSharedMemory: the target would escape
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
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
