package pgcoord

// What a lock session does when a try or an unlock fails while its
// connection stays open: a lock must never stay held on the session for
// nobody, so the statement is undone or retried, and failing that the
// connection is dropped, which frees every lock on it.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// undoTry releases key on the session for as many times as a failed try may
// have taken it. The in-process claim on key means no hold of this process
// has it on this session, so nothing held is released by mistake.
//
// An unlock that fails on a connection that stays open would leave the lock
// taken by this session for nobody, so the connection is dropped instead
// (doLocked then reports the session's holds lost).
func (s *session) undoTry(ctx context.Context, conn *pgx.Conn, h *hold) error {
	key := h.key
	if h.shared {
		// Other readers of this process may hold key shared on this
		// session: an unlock cannot tell their levels from the failed
		// try's. Closing the session frees them all (they are reported
		// lost), and never leaves a level held for nobody.
		s.c.log.Warn("pgcoord: a shared try failed; closing its session, which frees what it may have taken", "session", s.kind.String())
		s.dropConn(conn)
		return fmt.Errorf("%w: a shared try of %q failed and its session was closed", ErrLockAcquireFailed, h.lock.full)
	}
	for range 3 {
		released, err := s.c.q.Unlock(ctx, conn, key)
		if markerFailed(err) {
			continue // the unlock ran; once more to see the key free
		}
		if err != nil {
			if !conn.IsClosed() {
				s.c.log.Warn("pgcoord: undoing a failed try failed; closing its session, which frees the lock", "session", s.kind.String(), "err", err)
				s.dropConn(conn)
			}
			return err
		}
		if !released {
			return nil
		}
	}
	return nil
}

// markerFailed reports whether err is an Unlock statement's failure for a
// full lock table (SQLSTATE 53200): the statement's unlock, which only
// frees an entry, ran first, and its wait-marker try, which needs one,
// failed. The key is released; only the release's NOTIFY is lost (waits
// beyond the budget for it are woken by the dead-holder check instead).
// Before, a full lock table made such a release fail as lost, or closed
// the session and lost every hold on it (TestBatchStatementFailure).
func markerFailed(err error) bool { return isOutOfSharedMemory(err) }

// retryUnlock runs a plain unlock of key after an Unlock that failed on
// conn while it stayed open, and reports whether it ran. If it did, the key
// is not held by this session any more, whichever part of the failed
// statement ran: a full lock table fails Unlock's wait-marker try after its
// unlock (then this finds nothing to release), a cancel request may hit
// either. Waits beyond a budget for the key then miss their NOTIFY and are
// woken by the dead-holder check instead. If this fails too (a revoked
// privilege, a statement_timeout too short for any statement), the caller
// drops the connection. Called with sem held.
//
// A shared hold's unlock is not retried: if the failed statement's unlock
// ran, a second one would release another reader's level of the key on
// this session. Its connection is dropped instead.
func (s *session) retryUnlock(ctx context.Context, conn *pgx.Conn, h *hold) bool {
	if conn == nil || conn.IsClosed() || h.shared {
		return false
	}
	key := h.key
	if ctx.Done() == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.c.opTimeout())
		defer cancel()
	}
	_, err := s.c.q.UnlockPlain(ctx, conn, key)
	return err == nil
}

// dropForUnlock ends h as released and closes conn, on which h's unlock
// failed while the connection stayed open (a cancel request, a
// statement_timeout, a revoked privilege): left open, the session would
// hold the lock for nobody as long as it lives. Closing it frees the lock;
// the session's other holds go with it, and doLocked, seeing the connection
// closed, reports them lost. Called with sem held.
//
// The other unlocks of the batch being run (s.running) end the same way:
// closing the connection releases their locks too, so their Release
// succeeds rather than reporting a loss.
func (s *session) dropForUnlock(conn *pgx.Conn, h *hold, err error) {
	s.c.mu.Lock()
	drop := func(h *hold) {
		if !h.ended {
			h.ended, h.dropped = true, true
			delete(s.holds, h)
			s.c.stats.held.Add(-1)
		}
	}
	drop(h)
	for _, op := range s.running {
		if op.unlock && !op.async {
			drop(op.h)
		}
	}
	s.c.mu.Unlock()
	s.c.log.Warn("pgcoord: unlock failed; closing its session, which frees the lock",
		"lock", h.lock.full, "session", s.kind.String(), "err", err)
	s.dropConn(conn)
}

// awaitDropped waits until pid, the backend of a session closed because an
// unlock failed on it (see dropForUnlock), holds no lock, for at most
// awaitGoneMax, on the control session. Release reports such a lock
// released, so it must be free for others when Release returns; but the
// server frees a closed session's locks only once its backend has exited,
// a moment after the client closed the socket (TestFailedUnlockFreesLock
// found the lock still held after Release in 1 of a few CI runs).
func (c *Coordinator) awaitDropped(ctx context.Context, pid int32) {
	if pid == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), awaitGoneMax)
	defer cancel()
	_ = c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		c.control.awaitGone(ctx, conn, pid)
		return nil
	})
}

// dropConn closes conn, on which a statement just failed or must not be
// trusted; called with sem held, inside doLocked, which then sees the
// connection closed and treats the session as broken.
func (s *session) dropConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// batchStmtError marks a batch that failed on a statement while its
// connection stayed usable. drop, when set, is that connection, which must
// be dropped all the same (a hold of the batch was refused: see sendBatch)
// before the batch's unrun ops run again.
type batchStmtError struct {
	err error
	// conn is the connection the statement failed on; drop is conn too
	// when it must be dropped before the ops that did not run run again.
	conn, drop *pgx.Conn
}

func (e *batchStmtError) Error() string { return e.err.Error() }

func (e *batchStmtError) Unwrap() error { return e.err }
