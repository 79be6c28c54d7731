package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// Leader returns the election's current leader, read from pgcoord.leaders:
// a term counts while its leader's session holds the election's lock. It
// returns an error wrapping ErrNoLeader when there is none (nobody
// campaigned, the leader resigned, or it died and no successor has begun
// its term yet).
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	if e.lock.err != nil {
		return Leader{}, e.lock.err
	}
	if !e.c.running() {
		return Leader{}, ErrNotStarted
	}
	var row db.CurrentLeaderRow
	err := e.c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		row, err = e.c.q.CurrentLeader(ctx, conn, e.full)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Leader{}, fmt.Errorf("%w: election %q", ErrNoLeader, e.full)
	}
	if err != nil {
		return Leader{}, fmt.Errorf("pgcoord: election %q: reading the leader: %w", e.full, e.c.stoppedOr(err))
	}
	return Leader{MemberID: row.MemberID, Value: row.Value, Token: row.Token, Since: row.Since.Time}, nil
}

// Observe returns a channel that receives the current leader (the zero
// Leader when there is none), then the leader after every change: a new
// term, a new value, a resignation or a death. Changes come by
// notification from the leader's writes (within a round trip), and from a
// read every HeartbeatInterval, which finds a leader that died without a
// word and reconciles after the coordinator's connection broke; changes
// that pass within one read are seen as one. The channel is closed when ctx
// ends or the coordinator stops. A slow reader delays only its own
// updates.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	out := make(chan Leader)
	if e.lock.err != nil || !e.c.running() {
		close(out)
		return out
	}
	c := e.c
	// Counted, so that Stop returns only once it has ended.
	if !c.bg.start() {
		close(out)
		return out
	}
	// Subscribed before the first read, so no change falls in between.
	sub := c.notifier.subscribe(topicLeader, e.lock.key)
	go func() {
		defer c.bg.done()
		defer close(out)
		defer c.notifier.unsubscribe(sub)
		var last Leader
		first := true
		c.watchLoop(ctx, sub, true, fmt.Sprintf("observer of election %q", e.full), func() (bool, error) {
			cur, err := e.Leader(ctx)
			if err != nil && !errors.Is(err, ErrNoLeader) {
				return true, err // reconciled at a later read
			}
			if !first && sameTerm(cur, last) {
				return true, nil
			}
			first, last = false, cur
			return send(ctx, c, out, cur), nil
		})
	}()
	return out
}

// sameTerm reports whether a and b show the same leader, term and value.
func sameTerm(a, b Leader) bool {
	return a.MemberID == b.MemberID && a.Token == b.Token && a.Value == b.Value
}

// RunAsLeader campaigns for election name of c (nil: Default()) with value,
// runs fn while leader and resigns when fn returns or panics. fn's ctx is
// cancelled with cause ErrLockLost when the leadership is lost, and
// RunAsLeader then returns an error wrapping ErrLockLost even when fn
// returned nil. It returns fn's error, or ctx's when ctx ended before the
// leadership was won (fn did not run), joined with Resign's error if the
// resignation failed.
func RunAsLeader(ctx context.Context, c *Coordinator, name, value string, fn func(ctx context.Context) error) (err error) {
	if c == nil {
		if c = Default(); c == nil {
			return fmt.Errorf("%w: no coordinator given and no default set (SetDefault)", ErrNotStarted)
		}
	}
	e := c.Election(name)
	if err := e.Campaign(ctx, value); err != nil {
		return err
	}
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if t == nil {
		return fmt.Errorf("%w: election %q: leadership ended as it began", ErrLockLost, e.full)
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var lostMu sync.Mutex
	lost := false
	c.onLoss(t.h, func(error) {
		lostMu.Lock()
		lost = true
		lostMu.Unlock()
		cancel(ErrLockLost)
	})
	defer func() {
		rerr := e.Resign(context.WithoutCancel(ctx))
		lostMu.Lock()
		wasLost := lost
		lostMu.Unlock()
		if wasLost {
			err = errors.Join(fmt.Errorf("%w: leadership of election %q was lost while the function ran", ErrLockLost, e.full), err)
		} else if rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	return fn(&leaseCtx{Context: fnCtx, c: c, holds: []*hold{t.h}})
}
