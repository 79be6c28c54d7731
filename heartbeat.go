package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// heartbeatLoop beats every HeartbeatInterval until Stop, and whenever
// Heartbeat asks. Every beat checks the lock and wait sessions, whatever the
// control session is doing: holders must learn of a loss within two
// intervals even while the control session reconnects, which happens in a
// goroutine of its own with jittered exponential backoff, forever. IsActive
// is false meanwhile.
func (c *Coordinator) heartbeatLoop() {
	var reconnecting atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(c.hbDone)
	}()
	ticker := time.NewTicker(c.cfg.HeartbeatInterval)
	defer ticker.Stop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.checkLoop()
	}()
	for {
		var reply chan error
		select {
		case <-c.runCtx.Done():
			return
		case <-ticker.C:
		case <-c.beatNow:
		case reply = <-c.beatReq:
		}
		control := !reconnecting.Load()
		var asked *sync.WaitGroup
		if reply != nil {
			asked = new(sync.WaitGroup)
		}
		err := c.beat(c.runCtx, control, asked, &wg)
		if reply != nil {
			if !control {
				err = errors.New("pgcoord: heartbeat: the control session is reconnecting")
			}
			// Heartbeat's answer waits for the beat's pings (each bounded
			// by one interval); the loop does not.
			wg.Add(1)
			go func() {
				defer wg.Done()
				asked.Wait()
				reply <- err
			}()
		}
		if errors.Is(err, errBeatLate) {
			// The update goes on (see beat); a session that broke shows
			// as its error at a later beat.
			continue
		}
		if serverRefused(err) {
			// The server answered, with an error (its lock table is full,
			// say): the session is sound and reconnecting would only free
			// and retake the member lock. IsActive goes false by itself if
			// it lasts.
			c.log.Warn("pgcoord: heartbeat refused by the server", slog.Any("err", err))
			continue
		}
		if err != nil && control && c.runCtx.Err() == nil {
			c.active.Store(false)
			c.log.Warn("pgcoord: heartbeat failed; reconnecting", slog.Any("err", err))
			reconnecting.Store(true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer reconnecting.Store(false)
				c.reconnect()
			}()
		}
	}
}

// checkLoop checks every lock and wait session, pinging even those heard
// from lately, whenever checkSoon asks. It is a loop of its own, beside
// the heartbeat's, because a beat may wait up to an interval for the
// member row's update, and the point of checking now is not to wait.
func (c *Coordinator) checkLoop() {
	for {
		select {
		case <-c.runCtx.Done():
			return
		case <-c.checkNow:
		}
		for _, s := range c.checkedSessions() {
			s.check(nil, true)
		}
	}
}

// checkSoon asks checkLoop to check every session now: one of them found
// its connection broken, and a break seldom comes alone (a server restart,
// a failover, a cut network end every session at once). The sessions that
// find it themselves are those running statements; one that holds locks
// and sits idle (a granted wait, a lock held for a while) would otherwise
// learn at its next ping, up to an interval and a quarter later (see
// pingSkip). Many asks before the check make one check.
func (c *Coordinator) checkSoon() {
	select {
	case c.checkNow <- struct{}{}:
	default:
	}
}

// beatSoon asks the heartbeat loop for a beat now rather than at the next
// tick: the control session broke, and a beat that finds it broken starts
// the reconnect. Many asks before the beat make one beat.
func (c *Coordinator) beatSoon() {
	select {
	case c.beatNow <- struct{}{}:
	default:
	}
}

// Heartbeat sends one heartbeat now: it refreshes last_heartbeat with the
// database clock and checks every session that holds locks. It returns an
// error when the control session cannot reach the backend, or when the
// server has not answered the update within one HeartbeatInterval (the
// update goes on; a slow server does not break the session). The beat is run
// by the coordinator's heartbeat goroutine, on the coordinator's own
// deadline, so a cancelled ctx cannot cut a session (and its holds) short:
// ctx bounds only the wait for the result, and Heartbeat leaves no goroutine
// behind when it ends first.
func (c *Coordinator) Heartbeat(ctx context.Context) error {
	if !c.running() {
		return ErrNotStarted
	}
	reply := make(chan error, 1) // the loop never blocks on a caller gone
	select {
	case c.beatReq <- reply:
	case <-c.hbDone:
		return ErrNotStarted
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// beat runs one heartbeat: the session checks (which never wait: see
// session.check) and, when control is set, the member row update. The
// update runs in a goroutine of its own (counted by wg) and the beat waits
// for it at most one interval, so a slow server cannot delay the next
// beat's session checks; an update still running when the interval ends
// is waited for again by the next beat rather than sent twice, and makes
// the beat return errBeatLate, which is no reason to reconnect. ctx must
// be the coordinator's runCtx.
//
// Why the update is not cut at one interval: a beat that fails makes the
// heartbeat reconnect the control session (a new connection, the member
// lock freed and taken again), and a cancelled statement may close the
// connection anyway (pgx, when the server does not answer the cancel in
// time); on a loaded server (make fleet: 50 coordinators, 2 cores) updates
// that took over a second did exactly that, and every statement queued on
// the control session (names' registrations) failed while it reconnected. A late update is harmless: IsActive goes false after three
// intervals without an answer, and holds are bounded by the lease of the
// last beat heard (beatlease.go) whatever the control session does. Only
// an update unanswered for SessionTimeout (the server ends a session idle
// that long; a silent network looks the same) breaks the session.
func (c *Coordinator) beat(ctx context.Context, control bool, asked, wg *sync.WaitGroup) error {
	for _, s := range c.checkedSessions() {
		s.check(asked, false)
	}
	c.waits.reap()
	if !control {
		return nil
	}
	b := c.memberBeat
	if b == nil {
		b = c.startMemberBeat(ctx, wg)
		c.memberBeat = b
	}
	t := time.NewTimer(c.cfg.HeartbeatInterval)
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
		return errBeatLate
	case <-ctx.Done():
		return nil
	}
	c.memberBeat = nil
	if b.err != nil {
		return fmt.Errorf("pgcoord: heartbeat: %w", b.err)
	}
	if b.ran {
		c.lastBeat.Store(time.Now().UnixNano())
		c.active.Store(true)
	}
	return nil
}

// errBeatLate is a beat's error when the member row's update has not been
// answered within the interval (see beat): the server is slow, and the
// update goes on.
var errBeatLate = errors.New("pgcoord: heartbeat: the server has not answered within the interval; still waiting")

// memberBeat is one update of the member row (see beat).
type memberBeat struct {
	done chan struct{} // closed when the update ended
	err  error         // its error, set before done closes
	ran  bool          // false: the control session was busy for the whole interval
}

// startMemberBeat starts the member row's update. It waits one interval
// for the control session: another statement (a name's registration, a
// fencing token waiting for an application transaction) may have it for
// the whole beat, bounded by opTimeout, and a session it found broken is
// reconnected by the next beat.
func (c *Coordinator) startMemberBeat(ctx context.Context, wg *sync.WaitGroup) *memberBeat {
	b := &memberBeat{done: make(chan struct{})}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(b.done)
		lockCtx, cancel := context.WithTimeout(ctx, c.cfg.HeartbeatInterval)
		err := c.control.lockFirst(lockCtx)
		cancel()
		if err != nil {
			return
		}
		defer c.control.unlock()
		b.ran = true
		ctx, cancel := context.WithTimeout(ctx, c.cfg.SessionTimeout)
		defer cancel()
		b.err = c.control.doLocked(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			sent := monoNow()
			n, err := c.q.Heartbeat(ctx, conn, c.memberID)
			if err == nil && n == 0 {
				// The row was deleted or marked stopped by hand: write it
				// back, since other members judge liveness by it.
				return c.registerMemberLocked(ctx, conn, false)
			}
			if err == nil {
				c.beatHeard(sent)
			}
			return err
		})
	}()
	return b
}

// checkedSessions are the sessions each beat checks: every lock and wait
// session.
func (c *Coordinator) checkedSessions() []*session {
	return append(append([]*session(nil), c.lockSs...), c.waits.all()...)
}

// serverRefused reports whether err is the server's answer of severity
// ERROR to a statement (the session goes on), as opposed to FATAL or
// PANIC (the server ends the session) or a broken connection. It reads
// SeverityUnlocalized, which servers since 9.6 send untranslated: Severity
// follows lc_messages ("FEHLER" under de_DE), and a translated ERROR taken
// for a broken session would reconnect, freeing and retaking the member
// lock, for nothing.
func serverRefused(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	if pgErr.SeverityUnlocalized != "" {
		return pgErr.SeverityUnlocalized == "ERROR"
	}
	return pgErr.Severity == "ERROR"
}
