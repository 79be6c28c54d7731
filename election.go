package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// ElectionLockPrefix starts the lock name of every election: leadership of
// election name is an exclusive hold of the lock
// ElectionLockPrefix+Prefix+name, taken like any Lock (so it shows in
// pgcoord.held_locks under that name). Lock names are free-form, so a Lock
// given such a name would contend with the election: do not use it.
const ElectionLockPrefix = "pgcoord.election:"

// Election is one leader election, named per Prefix: at most one member
// of a prefix leads it at a time. Create it with Coordinator.Election.
//
// Leadership is an exclusive hold of the election's lock, taken through the
// same sessions and waits as Lock (a campaign waits on a wait session, or
// beyond the session budget at no backend cost), so a leader whose process
// dies frees it at once, and a leader whose session dies or goes silent
// learns of it as a holder does (Done closes, within two heartbeats, or at
// its first look once its lease ran out). Each term's value, fencing token
// and start are recorded in pgcoord.elections and shown, while the term
// lasts, in the view pgcoord.leaders.
//
// A new leader that takes over from one that did not resign (it died, or
// its session was cut off) does not return from Campaign until two and a
// half of its predecessor's heartbeat intervals have passed: by then a
// predecessor still running has been told (its Done closed), so two leaders
// never act at once. After a Resign, or when the predecessor's member
// stopped, the successor returns as soon as it holds the lock; also when
// the predecessor's member lock is free and its heartbeat older than its
// lease (a crashed leader restarted later takes over within a few round
// trips): a leader whose member heartbeat fails for the lease leads no
// more, from its first look (Done closes, and the other holds on the
// session of its lock are lost with it).
//
// An Election is safe for concurrent use; one Campaign at a time.
type Election struct {
	c    *Coordinator
	name string
	full string
	lock *Lock

	mu          sync.Mutex
	campaigning bool
	term        *term

	// testHook, set by a test before Campaign, runs in begin after the
	// previous term is read ("read") and after this term is recorded
	// ("recorded"), so that a test can order two members' steps where the
	// server alone cannot (graceread_test.go). nil otherwise.
	testHook func(stage string)
}

// term is one leadership of an Election: from Campaign's success to Resign
// or loss.
type term struct {
	h     *hold
	token int64
	value string
	since time.Time
	// done is closed when the term ends, by Resign or by the loss of h
	// (see hold.onLost), before anyone else in this process can take the
	// election's lock.
	done    chan struct{}
	endOnce sync.Once
	// count is the term in the election's Stats.
	count termCount
}

// end ends the term: cause is the loss of its lock, nil for Resign (or a
// start that failed).
func (t *term) end(cause error) {
	t.endOnce.Do(func() {
		// Counted first: whoever Done wakes reads Stats with the end in it
		// (TestElectionStats once read a lost term as still leading).
		t.count.markEnded(cause)
		close(t.done)
	})
}

// Leader is an election's leader, as Election.Leader and Election.Observe
// report it. The zero Leader means none.
type Leader struct {
	// MemberID is the leader's member id (its Prefix+AgentID).
	MemberID string
	// Value is what the leader gave Campaign, or its last Proclaim.
	Value string
	// Token is the fencing token of the term: tokens of successive terms of
	// an election strictly increase.
	Token int64
	// Since is when the term began (the database clock).
	Since time.Time
}

// closedChan is what Done returns when there is no leadership to end.
var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// Election returns the election name among this coordinator's prefix. It
// does no I/O; an invalid name makes Campaign fail with ErrInvalidName.
func (c *Coordinator) Election(name string) *Election {
	full := c.cfg.Prefix + name
	lockName := ElectionLockPrefix + full
	l := c.newNamedLock(lockName, lockName, "election name")
	l.leader = true
	if name == "" {
		l.err = fmt.Errorf("%w: empty election name", ErrInvalidName)
	}
	return &Election{c: c, name: name, full: full, lock: l}
}

// Name returns the election's name, without Prefix.
func (e *Election) Name() string { return e.name }

// Campaign blocks until this coordinator leads the election (nil), or ctx
// ends (ctx's error) or the coordinator stops (ErrNotStarted). value is
// published with the leadership (Leader.Value). Campaign on an Election that
// already leads changes its value, as Proclaim does (etcd's Campaign does
// the same). The wait is a lock wait, in line behind other campaigners;
// like Acquire it returns an error wrapping ErrDeadlock when it closed a
// cycle of waits among members and was the youngest of it. A value longer
// than MaxElectionValueLen, with a NUL or not UTF-8 is ErrInvalidValue, and
// no campaign begins.
func (e *Election) Campaign(ctx context.Context, value string) error {
	if e.lock.err != nil {
		return e.lock.err
	}
	if err := checkElectionValue(value); err != nil {
		return err
	}
	if e.current() != nil {
		return e.Proclaim(ctx, value)
	}
	e.mu.Lock()
	if e.campaigning {
		e.mu.Unlock()
		return fmt.Errorf("%w: a Campaign for election %q is under way on this Election", ErrAlreadyHeld, e.full)
	}
	e.campaigning = true
	e.term = nil
	e.mu.Unlock()
	// Counted from the first Campaign, so the election shows (not leading)
	// while this member waits to lead it.
	var st *electionStat
	if e.c.running() {
		st = e.c.prims.election(e.name)
	}
	defer func() {
		e.mu.Lock()
		e.campaigning = false
		e.mu.Unlock()
	}()

	ok, err := e.lock.Acquire(ctx, Wait)
	if err != nil {
		return err
	}
	if !ok {
		return ctx.Err()
	}
	e.lock.mu.Lock()
	h := e.lock.hold
	e.lock.mu.Unlock()
	t := &term{h: h, token: h.token, value: value, done: make(chan struct{}), count: termCount{st: st}}
	e.c.onLoss(h, t.end)
	if err := e.begin(ctx, t); err != nil {
		t.end(nil)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.opTimeout())
		if rerr := e.lock.releaseHold(rctx, h); rerr != nil && !errors.Is(rerr, ErrLockLost) {
			err = errors.Join(err, fmt.Errorf("pgcoord: election %q: releasing after a failed start: %w", e.full, rerr))
		}
		cancel()
		return err
	}
	e.mu.Lock()
	e.term = t
	e.mu.Unlock()
	t.count.markWon()
	e.c.lastTerms.set(e.full, t.token)
	return nil
}

// current returns the term under way, after a look at its lease; nil when
// not leader.
func (e *Election) current() *term {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if t == nil {
		return nil
	}
	e.c.lookLease(t.h)
	if e.c.holdEnded(t.h) {
		// Lost, or released: a term whose hold ended leads no more,
		// whether or not a loss was the cause.
		return nil
	}
	return t
}

// IsLeader reports whether this Election leads now. Like Lock.Lost it looks
// at the lease first: false from the first look after the lease ran out.
func (e *Election) IsLeader() bool { return e.current() != nil }

// Token returns the fencing token of the current term, 0 when not leader.
// Tokens of successive terms of an election, by any member, strictly
// increase; pass it to a store that refuses older tokens.
func (e *Election) Token() int64 {
	if t := e.current(); t != nil {
		return t.token
	}
	return 0
}

// BackendPID returns the server process id of the session on which this
// leadership is held (0 when not leader), to find the term's hold in
// pg_locks, pg_stat_activity or pgcoord.held_locks.
func (e *Election) BackendPID() int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil {
		return 0
	}
	return e.term.h.pid
}

// Done returns a channel closed when the current leadership ends: by Resign,
// or lost (its session died or was cut off, its lease ran out, or the
// coordinator stopped). When not leader it returns a closed channel. It
// looks at the lease first, as Lock.Lost does.
func (e *Election) Done() <-chan struct{} {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if t == nil {
		return closedChan
	}
	e.c.lookLease(t.h)
	return t.done
}

// Proclaim publishes a new value for the current term, without a new
// election (observers see the change). It returns ErrNotLeader when this
// Election does not lead, and ErrInvalidValue for a value Campaign would
// refuse (the term and its value go on).
func (e *Election) Proclaim(ctx context.Context, value string) error {
	if err := checkElectionValue(value); err != nil {
		return err
	}
	t := e.current()
	if t == nil {
		return fmt.Errorf("%w: election %q", ErrNotLeader, e.full)
	}
	var ok bool
	err := e.c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		ok, err = e.c.q.Proclaim(ctx, conn, db.ProclaimParams{Election: e.full, Token: t.token, Value: value})
		return err
	})
	if err != nil {
		return fmt.Errorf("pgcoord: election %q: proclaiming: %w", e.full, e.c.stoppedOr(err))
	}
	if !ok || e.current() != t {
		return fmt.Errorf("%w: election %q: the term ended", ErrNotLeader, e.full)
	}
	e.mu.Lock()
	t.value = value
	e.mu.Unlock()
	return nil
}

// Resign ends the leadership: Done closes, the term is recorded as
// resigned (so a successor need not wait for this leader to be told), and
// the lock is released, so the next campaigner leads within a few round
// trips. It returns ErrNotLeader when this Election does not lead, and an
// error when the resignation could not be recorded or the lock released
// (the leadership has ended all the same; a successor then waits out the
// grace). Like
// Lock.Release it ignores ctx's cancellation, bounded by an internal
// timeout.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	t := e.term
	e.mu.Unlock()
	if e.current() == nil {
		if t != nil {
			// Lost: let the lost hold go, so the Lock is ready again;
			// only that one (a Campaign may have won a new one since).
			_ = e.lock.releaseHold(ctx, t.h)
			e.mu.Lock()
			if e.term == t {
				e.term = nil
			}
			e.mu.Unlock()
		}
		return fmt.Errorf("%w: election %q", ErrNotLeader, e.full)
	}
	e.mu.Lock()
	e.term = nil
	e.mu.Unlock()
	t.end(nil)
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.opTimeout())
	defer cancel()
	// Recorded first, then released: the successor then sees the
	// resignation and does not wait for this leader to be told.
	var errs []error
	err := e.c.control.detached(bctx, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := e.c.q.EndTerm(ctx, conn, db.EndTermParams{Election: e.full, Token: t.token})
		return err
	})
	if err != nil {
		// The leadership ends all the same (the lock is released below);
		// a successor then waits out the grace.
		errs = append(errs, fmt.Errorf("pgcoord: election %q: recording the resignation: %w", e.full, err))
	}
	// The term's own hold only: a Campaign that ran meanwhile (after
	// term was cleared above) may hold a new one, which is its to keep.
	if err := e.lock.releaseHold(bctx, t.h); err != nil {
		errs = append(errs, fmt.Errorf("pgcoord: election %q: resigning: %w", e.full, err))
	}
	return errors.Join(errs...)
}
