package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcoord/pgcoord/db"
)

// The grace. A leader that takes over from one that did not resign (its
// session died or was cut off) must not act before its predecessor, if it
// still runs, knows it leads no more. The predecessor is told within two
// of its heartbeats of its session's end, so the successor waits two and a
// half of them, unless it can show the predecessor holds nothing already:
// its member lock is free and its heartbeat is older than its lease (plus
// graceMargin), after which the predecessor's first look or beat ends every
// hold it had (beatlease.go). When the predecessor's heartbeat will be that
// old before the grace ends, the successor looks again at that moment
// rather than waiting out the grace. The proof is in docs/design.md.

// graceMargin is added to the predecessor's lease before its silence
// counts: the predecessor times its lease on its own clock, the successor
// on the database's, and clocks run at slightly different rates (well under
// 1%).
func graceMargin(lease time.Duration) time.Duration { return lease/100 + 20*time.Millisecond }

// begin makes t, whose lock is held, the election's recorded term: after
// the grace its predecessor may need to be told (see above), it writes the
// term, fenced by its token, and notifies observers.
//
// The predecessor is the term read before the write, unless the write
// replaced another: a predecessor that won the lock, whose session died
// before its term committed, records its term after this member, granted
// the lock then, read the one before (TestGraceForTermRecordedAfterRead).
// That predecessor may lead unaware: this member's term is recorded, but
// begin returns only after the grace that predecessor is owed. (Its term
// cannot be recorded after this one: a newer token is, and its write
// fails, as must its Campaign.)
func (e *Election) begin(ctx context.Context, t *term) error {
	c := e.c
	prev, found, err := e.recordedTerm(ctx)
	if err != nil {
		return fmt.Errorf("pgcoord: election %q: reading the previous term: %w", e.full, err)
	}
	if e.testHook != nil {
		e.testHook("read")
	}
	var read int64 // the token of the term read, 0 when none
	if found {
		read = prev.Token
		if err := e.graceOwed(ctx, t, prev.MemberID, prev.Token, prev.Resigned, prev.Stopped, prev.HeartbeatSeconds); err != nil {
			return err
		}
	}
	var row db.BeginTermRow
	var again rerun
	err = c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		again.on(conn)
		var err error
		row, err = c.q.BeginTerm(ctx, conn, db.BeginTermParams{
			Election: e.full, Key: e.lock.key, MemberID: c.memberID, Value: t.value, Token: t.token,
			LeaseSeconds: c.lease().Seconds(),
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("pgcoord: election %q: recording the term: %w", e.full, c.stoppedOr(err))
	}
	if e.testHook != nil {
		e.testHook("recorded")
	}
	// lostReply is the heartbeat (s) by which a grace is owed when the
	// write's first run committed and its reply was lost: 0 otherwise.
	var lostReply float64
	if !row.Since.Valid {
		own := false
		if again.after {
			// Run again after its connection broke: the term recorded may
			// be this one, written by the first run.
			own, err = e.recordedIsOwn(ctx, t)
			if err != nil {
				return fmt.Errorf("pgcoord: election %q: reading the term recorded: %w", e.full, c.stoppedOr(err))
			}
		}
		if !own {
			return fmt.Errorf("%w: election %q: a newer term is recorded", ErrLockLost, e.full)
		}
		// The first run's answer, the term it replaced, was lost with the
		// reply: if that was a term recorded after begin's read (see
		// afterRecord), it is owed a grace, by a member unknown now. So
		// the full one, by the longer of the heartbeats known.
		lostReply = c.cfg.HeartbeatInterval.Seconds()
		if found {
			lostReply = max(lostReply, prev.HeartbeatSeconds)
		}
		row = db.BeginTermRow{Since: pgtype.Timestamptz{Time: time.Now(), Valid: true}}
	}
	t.since = row.Since.Time
	if lostReply > 0 {
		err = e.graceOwed(ctx, t, "", 0, false, false, lostReply)
	}
	if err == nil {
		err = e.afterRecord(ctx, t, row, read)
	}
	if err != nil {
		// This member never acted as leader: its recorded term is marked
		// resigned, so that observers do not show it and no successor
		// waits for it to be told (best effort: left unresigned, it costs
		// a successor a grace). Before Campaign releases the lock.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opTimeout())
		defer cancel()
		if eerr := c.control.detached(bctx, func(ctx context.Context, conn *pgx.Conn) error {
			_, err := c.q.EndTerm(ctx, conn, db.EndTermParams{Election: e.full, Token: t.token})
			return err
		}); eerr != nil {
			err = errors.Join(err, fmt.Errorf("pgcoord: election %q: ending the term that never led: %w", e.full, eerr))
		}
	}
	return err
}

// afterRecord finishes begin once t's term is recorded: the grace owed to
// a term recorded between begin's read and its write (the replaced one,
// when it is not the term read; none when the row was gone, pruned), and a
// look at t's lease.
func (e *Election) afterRecord(ctx context.Context, t *term, row db.BeginTermRow, read int64) error {
	c := e.c
	if row.ReplacedToken != read && row.ReplacedToken != 0 {
		c.log.Info("pgcoord: a term was recorded after this member read the previous one", "lock", e.lock.full,
			"term", fmt.Sprintf("member %s, token %d (the term read: token %d)", row.ReplacedMember, row.ReplacedToken, read))
		if err := e.graceOwed(ctx, t, row.ReplacedMember, row.ReplacedToken, row.ReplacedResigned, row.ReplacedStopped, row.ReplacedHeartbeatSeconds); err != nil {
			return err
		}
	}
	c.lookLease(t.h)
	if c.holdEnded(t.h) {
		return fmt.Errorf("%w: election %q: leadership lost as it began", ErrLockLost, e.full)
	}
	return nil
}

// graceOwed waits out the grace owed to the predecessor term (member,
// token), if any: none when it resigned, its member stopped, or it was this
// coordinator's own. hbSeconds is its member's HeartbeatInterval (0 when
// unknown: this member's own is used).
func (e *Election) graceOwed(ctx context.Context, t *term, member string, token int64, resigned, stopped bool, hbSeconds float64) error {
	if resigned || stopped || e.c.lastTerms.ours(e.full, token) {
		return nil
	}
	hb := time.Duration(hbSeconds * float64(time.Second))
	if hb <= 0 {
		hb = e.c.cfg.HeartbeatInterval
	}
	return e.grace(ctx, t, member, 2*hb+hb/2)
}

// grace waits until member, the predecessor, holds nothing for sure: full
// has passed, or its member lock is free and its heartbeat older than its
// lease (see above).
func (e *Election) grace(ctx context.Context, t *term, member string, full time.Duration) error {
	c := e.c
	deadline := time.Now().Add(full)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil
		}
		var s db.PredecessorSilenceRow
		err := c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			var err error
			s, err = c.q.PredecessorSilence(ctx, conn, member)
			return err
		})
		if errors.Is(err, pgx.ErrNoRows) {
			// Its row is gone: pruned, long silent, or deleted by hand.
			// Nothing shows it was told: the full grace.
			err = nil
		}
		if err != nil {
			return fmt.Errorf("pgcoord: election %q: reading the predecessor's heartbeat: %w", e.full, c.stoppedOr(err))
		}
		if !s.MemberLive && s.LeaseSeconds > 0 {
			lease := time.Duration(s.LeaseSeconds * float64(time.Second))
			left := lease + graceMargin(lease) - time.Duration(s.SilentSeconds*float64(time.Second))
			if left < 0 {
				return nil // told at its first look, or gone
			}
			// Look again when its heartbeat will be old enough, if that
			// comes before the end of the grace.
			wait = min(wait, left+time.Millisecond)
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-t.done:
			timer.Stop()
			return fmt.Errorf("%w: election %q: leadership lost as it began", ErrLockLost, e.full)
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-c.runCtx.Done():
			timer.Stop()
			return ErrNotStarted
		}
	}
}

// lastTerms remembers the latest term each election had in this
// coordinator, so that a leader re-elected after its own loss does not wait
// for itself to be told (it was, before its claim on the lock was freed).
type lastTerms struct {
	mu     sync.Mutex
	tokens map[string]int64
}

func (l *lastTerms) set(election string, token int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tokens == nil {
		l.tokens = map[string]int64{}
	}
	if len(l.tokens) >= nameCacheMax {
		clear(l.tokens)
	}
	l.tokens[election] = token
}

func (l *lastTerms) ours(election string, token int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return token != 0 && l.tokens[election] == token
}

// recordedTerm reads the term recorded for the election; found is false
// when there is none.
func (e *Election) recordedTerm(ctx context.Context) (db.PreviousTermRow, bool, error) {
	c := e.c
	var row db.PreviousTermRow
	found := true
	err := c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		row, err = c.q.PreviousTerm(ctx, conn, e.full)
		if errors.Is(err, pgx.ErrNoRows) {
			found, err = false, nil
		}
		return err
	})
	if err != nil {
		// ctx ended first, perhaps: the statement runs on (detached) and
		// may yet write row and found, which are not read then.
		return db.PreviousTermRow{}, false, err
	}
	return row, found, nil
}

// recordedIsOwn reports whether the term recorded for the election is t,
// written by this member (a BeginTerm whose reply was lost: see begin).
func (e *Election) recordedIsOwn(ctx context.Context, t *term) (bool, error) {
	cur, found, err := e.recordedTerm(ctx)
	return err == nil && found && cur.MemberID == e.c.memberID && cur.Token == t.token, err
}
