package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// tooManyConnections types the server's refusal of a connection for want of
// slots (SQLSTATE 53300, "sorry, too many clients already").
func tooManyConnections(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "53300" {
		return fmt.Errorf("%w: %w", ErrTooManyConnections, err)
	}
	return err
}

// exempt reports whether s opens without a headroom check: the control
// session, which runs the check, and, once Start is done, the first lock
// session, which a started coordinator cannot work without (it had a slot a
// moment ago, when its connection broke).
func (c *Coordinator) exempt(s *session) bool {
	return s == c.control || (len(c.lockSs) > 0 && s == c.lockSs[0] && c.running())
}

// admit decides whether s may open a connection now: it is refused
// (ErrTooManyConnections) when opening it would leave the server fewer free
// connection slots than Config.ConnectionHeadroom. Connection slots are a
// shared server's scarcest resource: when they run out, every client of the
// server (the application itself) fails. Start checks too, before its first
// lock session: a coordinator that cannot have its two sessions without
// eating into the headroom does not start (ErrTooManyConnections), and closes
// the control session it opened to ask. The check runs on the control
// session; when that is unavailable the dial goes ahead and only the
// server's own refusal (53300) stops it.
func (c *Coordinator) admit(ctx context.Context, s *session) error {
	if c.exempt(s) || c.cfg.ConnectionHeadroom < 0 {
		return nil
	}
	var free, headroom int
	err := c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		row, err := c.q.FreeConnections(ctx, conn)
		if err != nil {
			return err
		}
		free = int(row.Usable - row.Used)
		headroom = c.headroom(row.Usable)
		return nil
	})
	if err != nil {
		return nil
	}
	if free-1 < headroom {
		c.stats.refusedSessions.Add(1)
		return fmt.Errorf("%w: opening a %s session would leave %d free connection slots, fewer than the headroom of %d (Config.ConnectionHeadroom)",
			ErrTooManyConnections, s.kind, free-1, headroom)
	}
	return nil
}

// headroom is the free connection slots a coordinator leaves the server:
// Config.ConnectionHeadroom, or by default a tenth of usable.
func (c *Coordinator) headroom(usable int32) int {
	if c.cfg.ConnectionHeadroom != 0 {
		return c.cfg.ConnectionHeadroom
	}
	return int(usable) / 10
}

// admitted is admit's second look, from the session s has just opened:
// sessions of many coordinators that looked at the free slots at the same
// moment each saw room for one more, and opened together could eat into
// the headroom (make fleet: 50 coordinators at a full server took the
// last usable slot, and 6 of 90 connections of the application were
// refused). Each new session counts the client backends connected now,
// itself and every session that opened before its count included, and
// closes itself if they leave fewer free slots than the headroom: the last
// of a crowd to count sees the whole crowd. Called with s's sem held, s
// connected.
func (c *Coordinator) admitted(ctx context.Context, s *session) error {
	if c.exempt(s) || c.cfg.ConnectionHeadroom < 0 || s.conn == nil {
		return nil
	}
	row, err := c.q.FreeConnections(ctx, simpleProtocol{s.conn})
	if err != nil {
		return nil // the first statement on it will tell
	}
	headroom := c.headroom(row.Usable)
	free := int(row.Usable - row.Used)
	if free >= headroom {
		return nil
	}
	s.drop()
	s.gonePID = 0 // it held nothing: the next dial need not wait for its exit
	c.stats.refusedSessions.Add(1)
	return fmt.Errorf("%w: the %s session just opened leaves %d free connection slots, fewer than the headroom of %d (Config.ConnectionHeadroom): sessions of other coordinators opened at the same moment",
		ErrTooManyConnections, s.kind, free, headroom)
}

// refusalPause is how long, after a wait session was refused for want of
// connection slots, waits go beyond the budget without trying to open one.
const refusalPause = time.Second

// refusal remembers when a session was last refused (monoNow), so that a
// crowd of waiters does not ask the server for slots it has not got.
type refusal struct{ at atomic.Int64 }

func (r *refusal) mark() { r.at.Store(monoNow()) }

// recent reports whether a session was refused within refusalPause.
func (r *refusal) recent() bool {
	at := r.at.Load()
	return at != 0 && time.Duration(monoNow()-at) < refusalPause
}
