package pgcoord

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// Shared (read) holds take the same key in PostgreSQL's ShareLock mode.
// What differs from an exclusive hold is only which statement each step
// runs; the sessions, waits, losses and the local table are the same (the
// local table lets any number of shared claims of a key in at once, see
// localTable). Each shared hold takes its own level of the server's shared
// lock, so each is released on its own.

// trySQL is the try statement of h: TryLock, or for a shared hold
// TryLockShared, or TryJoinShared when another reader of this process may
// hold the key on the session already (the server would grant that try
// whatever waits for the key; see the query).
func (h *hold) trySQL() string {
	switch {
	case !h.shared:
		return db.TryLock
	case h.entry.joined:
		return db.TryJoinShared
	default:
		return db.TryLockShared
	}
}

// unlockSQL is the unlock statement of h.
func (h *hold) unlockSQL() string {
	if h.shared {
		return db.UnlockShared
	}
	return db.Unlock
}

// tryOn runs h's try on conn, s's connection, alone: the fencing token, 0
// when busy. An exclusive try takes the hot path (hot.go) where it can.
func (s *session) tryOn(ctx context.Context, conn *pgx.Conn, h *hold) (int64, error) {
	q := s.c.q
	switch {
	case !h.shared:
		if s.hot.on(conn) {
			if tok, ok, err := s.hot.tryLock(ctx, h.key); ok {
				return tok, err
			}
		}
		return q.TryLock(ctx, conn, h.key)
	case h.entry.joined:
		return q.TryJoinShared(ctx, conn, h.key)
	default:
		return q.TryLockShared(ctx, conn, h.key)
	}
}

// unlockOn runs h's unlock on conn, s's connection, alone. An exclusive
// unlock takes the hot path (hot.go) where it can.
func (s *session) unlockOn(ctx context.Context, conn *pgx.Conn, h *hold) (bool, error) {
	if h.shared {
		return s.c.q.UnlockShared(ctx, conn, h.key)
	}
	if s.hot.on(conn) {
		if released, ok, err := s.hot.unlock(ctx, h.key); ok {
			return released, err
		}
	}
	return s.c.q.Unlock(ctx, conn, h.key)
}

// waitOnce waits on the server for h's key for at most timeoutMs: the
// fencing token, 0 when the wait timed out. floor is the session's token
// floor (see session.finishToken). An exclusive wait takes the hot path
// (hot.go) where it can.
func (c *Coordinator) waitOnce(ctx context.Context, s *session, conn *pgx.Conn, h *hold, timeoutMs int32) (int64, error) {
	var tok int64
	var err error
	if h.shared {
		tok, err = c.q.WaitLockShared(ctx, conn, db.WaitLockSharedParams{Key: h.key, TimeoutMs: timeoutMs})
	} else {
		hot := false
		if s.hot.on(conn) {
			tok, hot, err = s.hot.waitLock(ctx, h.key, timeoutMs)
		}
		if !hot {
			tok, err = c.q.WaitLock(ctx, conn, db.WaitLockParams{Key: h.key, TimeoutMs: timeoutMs})
		}
	}
	if isLockTimeout(err) {
		// lock_timeout: the slice ended with the lock still busy, and the
		// failed statement left the session usable. It took nothing but
		// in one race: a grant that came as the timeout fired is kept
		// (PostgreSQL's LockErrorCleanup records a lock granted while the
		// error was being raised, and a session lock outlives the failed
		// statement), for nobody, and the next slice would stack on it.
		// A wait session holds nothing else while it waits (see
		// waitPool), so all its advisory locks go: one round trip per
		// slice that ends unserved, never on a granted wait's path.
		// (TestTimedOutSliceKeepsNoGrant.)
		if err := c.q.UnlockAll(ctx, conn); err != nil {
			return 0, err
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return s.finishToken(ctx, conn, tok)
}

// writerIntent is the writer's intent of a wait beyond the budget for an
// exclusive hold (see pgcoord.wait_lock_shared): held on a lock session while the wait
// lasts, so that readers hold off. gen is the session connection it was
// taken on; a new connection has lost it.
type writerIntent struct {
	s   *session
	gen uint64
}

// takeIntent takes the writer's intent for h's key on its lock session,
// unless it holds it on that session's current connection already. A
// failure (another writer has it, a reader's statement held it for an
// instant, the session is down) is left for the next wake to retry.
func (c *Coordinator) takeIntent(h *hold, in *writerIntent) {
	s := c.lockSession(h.key)
	if in.s == s && in.gen == s.gen.Load() {
		return
	}
	in.s = nil
	_ = s.do(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
		ok, err := c.q.TakeWriterIntent(ctx, conn, h.key)
		if err == nil && ok {
			in.s, in.gen = s, s.gen.Load()
		}
		return err
	})
}

// dropIntent lets the writer's intent go, if held on the connection it was
// taken on (a new connection does not have it).
func (c *Coordinator) dropIntent(h *hold, in *writerIntent) {
	s := in.s
	if s == nil {
		return
	}
	in.s = nil
	_ = s.do(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
		if s.gen.Load() != in.gen {
			return nil
		}
		_, err := c.q.DropWriterIntent(ctx, conn, h.key)
		if err != nil && !conn.IsClosed() {
			// Left held, it would hold off every reader for as long as
			// the session lives: close the session instead.
			s.dropConn(conn)
		}
		return err
	})
}
