package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sessionKind says what a session is for.
type sessionKind int

const (
	// sessionControl carries the member's liveness: the heartbeat, the
	// member row and the member lock. It also registers lock names, records
	// fencing tokens, and serves the waits beyond the session budget
	// (LISTEN, wait markers, the check for dead holders): it never holds a
	// named lock. See control.go.
	sessionControl sessionKind = iota
	// sessionLock holds the locks taken without a server-side wait; many
	// per session, its statements batched (see batch.go).
	sessionLock
	// sessionWait waits on the server for one contended lock and then holds
	// it. It never holds any other lock, so cancelling its wait (pgx closes
	// the connection on cancel) costs nobody a hold. See wait.go.
	sessionWait
)

// String names the kind in logs and errors.
func (k sessionKind) String() string {
	return [...]string{"control", "lock", "wait"}[k]
}

// session is one dedicated connection owned by the coordinator, never part
// of any pool, with the holds on it. The layers, bottom up:
//
//   - backend (conn.go): the connection itself: dial, prepare, lease clock,
//     ping, forced close, generation;
//   - session (this file): one goroutine at a time (sem), a statement run
//     with a redial and a retry (do), the holds on the connection, their
//     loss when it breaks; the heartbeat's check and ping are in check.go;
//   - the role of its kind, each a struct of its own embedded here:
//     controlRole (control.go: the listener's hand-over, waiting for a
//     reconnect, never waiting on a lock), batchRole (batch.go: group
//     commit of tries and unlocks) and waitRole (wait.go: the pool's
//     bookkeeping).
//
// When its connection breaks, every hold on it is lost at once, and lock and
// wait sessions dial again on their next use; the control session is
// redialled by the heartbeat, which must also retake the member lock.
type session struct {
	backend
	// sem is a one-slot semaphore: a mutex whose Lock can give up with ctx.
	// It guards the backend's connection and closed.
	sem chan struct{}
	// closed is guarded by sem: a closed session never dials again.
	closed bool
	// holds is guarded by c.mu.
	holds map[*hold]struct{}

	controlRole
	batchRole
	waitRole
}

// batchRole is a lock session's queue of tries and unlocks (see lockOp).
type batchRole struct {
	// bmu guards batch.
	bmu   sync.Mutex
	batch batchQueue
	// running is the batch being run, guarded by sem (see dropForUnlock).
	running []*lockOp
}

// waitRole is a wait session's bookkeeping in the wait pool.
type waitRole struct {
	// idleSince is when the wait pool last put this session aside unused
	// (monoNow); guarded by the pool's mu.
	idleSince int64
	// lightMu guards inLight, set while a wait's statement runs under no
	// context (see waitWatch), and the socket's deadline meanwhile: Stop
	// moves it to now, which ends the statement (see interruptLight).
	lightMu sync.Mutex
	inLight bool
}

func newSession(c *Coordinator, kind sessionKind) *session {
	s := &session{backend: backend{c: c, kind: kind}, sem: make(chan struct{}, 1), holds: map[*hold]struct{}{}}
	if kind == sessionControl {
		s.notify = c.notifier.notified
		s.handoff = make(chan struct{})
	}
	return s
}

func (s *session) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	default:
	}
	if s.kind == sessionControl {
		// The holder may be the listener, waiting for a notification for
		// as long as nobody else needs the session: end its wait.
		s.wanted.Add(1)
		defer s.wanted.Add(-1)
		s.interrupt()
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unlock releases sem, or hands it to a goroutine waiting in lockFirst.
func (s *session) unlock() {
	if s.first.Load() > 0 {
		select {
		case s.handoff <- struct{}{}:
			return
		default:
		}
	}
	<-s.sem
}

// do runs fn on the session's connection, dialling first where allowed. If
// the connection breaks during fn, the session's holds are reported lost.
func (s *session) do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	return s.doLocked(ctx, fn)
}

// errSessionGone is doLockedTries's error when the session has no live
// connection and may not dial one.
var errSessionGone = errors.New("pgcoord: the session's connection is gone")

// doLocked is do with sem already held: fn runs at most twice, the second
// time on a new connection when the first died under it.
func (s *session) doLocked(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	return s.doLockedTries(ctx, 2, fn)
}

// doLockedTries is doLocked with at most tries runs of fn: 1 runs it on the
// current connection only, with no dial before or after (see
// Coordinator.unlock), and returns errSessionGone if there is none.
func (s *session) doLockedTries(ctx context.Context, tries int, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	if s.closed {
		return ErrNotStarted
	}
	// A lock session carries many holds, and pgx closes a connection whose
	// statement is cancelled: a caller's cancellation must never cut one
	// short. Its statements (try, unlock) are short and never wait on other
	// sessions, so they are bounded by a deadline on the socket instead of
	// a context: pgx then has no context to watch, which keeps the hot path
	// free of a context, a timer and a watcher per statement.
	//
	// A wait session's statements under a ctx without a deadline (an
	// Acquire with Wait) are bounded by the socket too: the caller's ctx
	// still ends the wait (pgx watches it and closes the connection, as a
	// cancelled wait must), and each slice of the wait is spared a context
	// and a timer of its own.
	bySocket := s.kind == sessionLock
	if bySocket {
		ctx = context.Background()
	} else if _, ok := ctx.Deadline(); !ok {
		bySocket = s.kind == sessionWait
		if !bySocket {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.c.opTimeout())
			defer cancel()
		}
	}
	for attempt := 0; ; attempt++ {
		if s.conn != nil && !s.onControlServer() {
			// The control session moved to another server (a failover):
			// this session's server is not the primary any more, and its
			// holds protect nothing. (Its connection is usually dead
			// already; if not, closing it frees its locks there too.)
			s.broken(fmt.Errorf("%w: %w: %s session on %v, the control session on %v", ErrLockLost, ErrWrongServer, s.kind, s.identity, s.c.identity.Load()))
		}
		if s.conn == nil || s.conn.IsClosed() {
			if s.conn != nil {
				s.broken(fmt.Errorf("%w: %s session closed", ErrLockLost, s.kind))
			}
			if tries == 1 {
				return errSessionGone
			}
			if !s.mayRedial() {
				return errControlReconnecting
			}
			dctx, cancel := ctx, context.CancelFunc(func() {})
			if bySocket {
				base := ctx
				if s.kind == sessionLock {
					// Its ctx is Background (see above): Stop, which
					// cancels runCtx before it closes the sessions (and
					// close waits for the sem this dial holds), ends the
					// dial at once, not after opTimeout
					// (TestStopEndsLockSessionDial).
					base = s.c.runCtx
				}
				dctx, cancel = context.WithTimeout(base, s.c.opTimeout())
			}
			err := s.dial(dctx, true)
			cancel()
			if err != nil {
				return err
			}
		}
		var raw net.Conn
		var bound time.Time
		if bySocket {
			// A timed-out read fails the statement and pgx closes the
			// connection, as a cancelled context would.
			raw = s.conn.PgConn().Conn()
			bound = time.Now().Add(s.c.opTimeout())
			_ = raw.SetDeadline(bound)
		}
		conn := s.conn
		sent := monoNow()
		s.stmtSent = sent
		err := fn(ctx, conn)
		if raw != nil && !conn.IsClosed() {
			_ = raw.SetDeadline(time.Time{})
		}
		if err == nil {
			s.heardAt(sent)
			return nil
		}
		if !conn.IsClosed() {
			if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) {
				// The server answered: the session was alive after the
				// send, as for a statement that succeeded. Not counted, a
				// session kept busy by statements the server refuses
				// (a full lock table, the fencing sequence at its
				// maximum) was neither heard from nor pinged (the check
				// leaves a busy session alone), and its lease ran out
				// with the server answering (TestRefusedStatementsKeepLease).
				s.heardAt(sent)
			}
			return err
		}
		// pgx closes the connection on network errors and on cancellation;
		// either way the server ends the session and with it every lock.
		s.broken(fmt.Errorf("%w: %s session broke: %w", ErrLockLost, s.kind, err))
		// A connection that died while idle (a server restart, an idle
		// timeout) fails the next statement before the server ran it: one
		// retry on a new connection turns that into success. A lock
		// statement is safe to repeat: one that did run died with its
		// session. A control session's write to a table is not (it may have
		// committed, its reply lost): it is repeated by detached, after the
		// reconnect, and each such write reads "already done" as done (see
		// rerun).
		if attempt+1 >= tries || ctx.Err() != nil || s.kind == sessionWait && bySocket && !time.Now().Before(bound) {
			// (A wait session's statement that ran out its bound is not
			// repeated, as under a context's deadline.)
			return err
		}
		if !s.mayRedial() {
			// The heartbeat's reconnect replaces it (see onControl).
			return fmt.Errorf("%w: %w", errControlReconnecting, err)
		}
	}
}

// connect dials now (Start opens the control session and one lock session
// up front so that bad settings fail Start, not the first Acquire).
func (s *session) connect(ctx context.Context) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	if s.conn != nil && !s.conn.IsClosed() {
		return nil
	}
	return s.dial(ctx, false)
}

// dial opens the connection, once the server has a slot to spare for it
// (see admit); called with sem held. redial is false for Start's first
// connection only (see dialSession).
func (s *session) dial(ctx context.Context, redial bool) (err error) {
	if s.kind != sessionControl {
		// A reconnect of the control session under way should try now,
		// whatever this dial finds: if it fails, a caller waits for a
		// session and the server is gone or is not the control session's
		// (a failover); if it succeeds, the server is back, and the
		// control session (the member row, IsActive) need not wait out a
		// backoff that grew through the outage. Without the latter, after
		// a restart the first Acquire came within a second but IsActive
		// stayed false for longer than 5 s (TestFirstAcquireAfterOutage).
		// A success asks past the rate limit: it is rare (one per session
		// opened), and an ask of a failed dial just before it would
		// otherwise swallow it.
		defer func() {
			if err != nil {
				s.c.reconnectSoon()
			} else {
				s.c.reconnectNow()
			}
		}()
	}
	if err := s.c.admit(ctx, s); err != nil {
		return err
	}
	if err := s.open(ctx, redial); err != nil {
		return err
	}
	return s.c.admitted(ctx, s)
}

// broken drops the connection and reports every hold on it lost; called with
// sem held.
func (s *session) broken(cause error) {
	if s.drop() {
		if s.kind == sessionControl {
			// Reconnect now, not at the next beat: until the control
			// session is back, no name can be registered (a failover's
			// new primary waits for it).
			s.c.beatSoon()
		}
		// The other sessions may have broken with it (see checkSoon).
		s.c.checkSoon()
	}
	s.c.loseHolds(s, cause)
	s.loseQueuedAsync(cause)
}

// loseQueuedAsync reports the holds whose asynchronous unlock (see
// Config.AsyncRelease) is still queued on s, or in the batch being run, as
// lost late: their Release returned, so loseHolds no longer sees them, but
// their locks went with the connection before the unlock ran. Telling them
// now, rather than once the unlock has run on the next connection (which
// first waits for the old backend to exit, up to a second), keeps the signal
// within the bound of a loss that Release could have reported. Called with
// sem held.
func (s *session) loseQueuedAsync(cause error) {
	s.bmu.Lock()
	var late []*lockOp
	for _, op := range s.batch.queue {
		if op.async {
			late = append(late, op)
		}
	}
	s.bmu.Unlock()
	for _, op := range s.running {
		if op.async {
			late = append(late, op)
		}
	}
	for _, op := range late {
		s.c.lostLate(op.h, fmt.Errorf("%w: the session of %q broke before its asynchronous unlock ran: %w", ErrLockLost, op.h.lock.full, cause))
	}
}

// close releases the session's locks (signalling their loss first, so no
// holder learns of it after someone else got the lock), closes the
// connection and keeps the session from dialling again. It closes the
// session whatever ctx says: when ctx ends while a statement holds the
// session, the socket is closed under it (so the statement fails at once)
// and the polite unlock is skipped.
//
// It returns the backend pid whose exit frees this session's locks when
// they were not released by a statement here (0 when they were, or there
// were none): the server frees a session's locks only once its backend has
// exited, a moment after the client saw the connection end, so Stop waits
// for that pid to hold nothing before it returns.
func (s *session) close(ctx context.Context, cause error) (exiting int32, err error) {
	if s.lock(ctx) != nil {
		s.forceClose(0)
		s.sem <- struct{}{}
	}
	defer s.unlock()
	s.closed = true
	s.stopFlush()
	s.c.loseHolds(s, cause)
	if s.conn == nil {
		return s.gonePID, nil
	}
	exiting = s.backendPID
	if s.kind != sessionControl && !s.conn.IsClosed() && ctx.Err() == nil {
		// Closing alone would free the locks too, but only once the server
		// notices; unlocking first makes them free when Stop returns.
		err = s.c.q.UnlockAll(ctx, s.conn)
		switch {
		case err == nil:
			exiting = 0
		case s.conn.IsClosed():
			// The session was already dead (an idle timeout, a restart):
			// its locks went with it, and there is nothing to release.
			err = nil
		}
	}
	_ = s.conn.Close(ctx)
	s.conn = nil
	s.hot = hotConn{}
	s.raw.Store(nil)
	if err != nil {
		return exiting, fmt.Errorf("pgcoord: releasing locks of %s session: %w", s.kind, err)
	}
	return exiting, nil
}
