package pgcoord

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pgcoord/pgcoord/internal/hash"
	"github.com/pgcoord/pgcoord/internal/tmpl"
)

// MaxNameLen is the longest full lock name (Prefix+Name) in bytes. The name
// registry's unique index limits how long a name can be; 2 KiB stays clear of
// it.
const MaxNameLen = 2048

// Blocking says how Acquire waits for a busy lock: Wait, NoWait or Timeout(d).
// The zero value is Wait.
type Blocking struct {
	mode    blockMode
	timeout time.Duration
}

type blockMode uint8

const (
	blockWait blockMode = iota
	blockNoWait
	blockTimeout
)

var (
	// Wait blocks until the lock is acquired or ctx is done.
	Wait = Blocking{mode: blockWait}
	// NoWait tries once and returns at once.
	NoWait = Blocking{mode: blockNoWait}
)

// Timeout waits at most d; d <= 0 is NoWait.
func Timeout(d time.Duration) Blocking {
	if d <= 0 {
		return NoWait
	}
	return Blocking{mode: blockTimeout, timeout: d}
}

// String describes the blocking mode.
func (b Blocking) String() string {
	switch b.mode {
	case blockNoWait:
		return "NoWait"
	case blockTimeout:
		return fmt.Sprintf("Timeout(%v)", b.timeout)
	default:
		return "Wait"
	}
}

// Lock is a named distributed lock. Create it with NewLock or
// Coordinator.GetLock. A Lock holds at most one hold at a time and is not
// reentrant; Locks for the same name exclude each other whether they live in
// one goroutine, one coordinator or different processes. A Lock is safe for
// concurrent use, but Acquire from two goroutines on one Lock gives the
// second ErrAlreadyHeld: give each goroutine its own Lock.
type Lock struct {
	c    *Coordinator
	name string
	full string
	key  int64
	// err is a name error found at construction by GetLock (which cannot
	// return one); Acquire returns it.
	err error
	// leader: an election's lock, whose holds are also bound to the
	// member's heartbeat (see beatlease.go).
	leader bool
	// unqueued: a semaphore's slot, whose waits take no ticket in the
	// name's queue (the semaphore queues its waits itself), and whose
	// tries are not counted in Stats (the Semaphore's Acquire, which may
	// try every slot many times, counts once; see countAcquire).
	unqueued bool

	mu        sync.Mutex
	acquiring bool
	hold      *hold
	// lost is what Lost returns: the next hold's channel until a hold is
	// made with it, then that hold's. lostUsed says a hold was made with it,
	// so the next Acquire needs a fresh one: the old one is closed, or may
	// yet close (a loss, or one found late by an AsyncRelease unlock).
	lost     chan struct{}
	lostUsed bool
}

// NewLock returns a Lock whose name is the template name formatted with data
// (see the package doc for the syntax). c nil means Default(). It does no I/O.
func NewLock(name string, data any, c *Coordinator) (*Lock, error) {
	if c == nil {
		c = Default()
		if c == nil {
			return nil, fmt.Errorf("%w: no coordinator given and no default set (SetDefault)", ErrNotStarted)
		}
	}
	t, err := tmpl.Parse(name)
	if err != nil {
		return nil, err
	}
	formatted, err := t.Format(nil, data)
	if err != nil {
		return nil, err
	}
	l := c.newLock(formatted)
	if l.err != nil {
		return nil, l.err
	}
	return l, nil
}

// GetLock returns a Lock for name, used as it is (not a template), like
// Cinder's Coordinator.get_lock. An invalid name makes Acquire fail with
// ErrInvalidName.
func (c *Coordinator) GetLock(name string) *Lock {
	return c.newLock(name)
}

func (c *Coordinator) newLock(name string) *Lock {
	return c.newNamedLock(name, c.cfg.Prefix+name, "name")
}

// newNamedLock returns a Lock shown as name whose full name (and key) is
// full: every Lock is made here, those of elections and semaphore slots
// too. what names the thing in the error for an empty name.
func (c *Coordinator) newNamedLock(name, full, what string) *Lock {
	l := &Lock{c: c, name: name, full: full, key: hash.Key(full), lost: make(chan struct{})}
	if name == "" {
		l.err = fmt.Errorf("%w: empty %s", ErrInvalidName, what)
	} else if err := validateName(full); err != nil {
		l.err = err
	}
	return l
}

func validateName(full string) error {
	switch {
	case full == "":
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	case len(full) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes, longer than MaxNameLen (%d)", ErrInvalidName, len(full), MaxNameLen)
	}
	if fault := textFault(full); fault != "" {
		return fmt.Errorf("%w: %s", ErrInvalidName, fault)
	}
	return nil
}

// textFault says why PostgreSQL's text cannot hold s (bytes that are not
// UTF-8, a NUL), or "" when it can: lock names and election values are
// refused for it before any I/O, as the server would refuse them with an
// untyped error.
func textFault(s string) string {
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Sprintf("a NUL byte at %d (PostgreSQL text cannot hold it)", i)
	}
	return ""
}

// Name returns the formatted name, without the coordinator's Prefix.
func (l *Lock) Name() string { return l.name }

// Key returns the advisory-lock key of Prefix+Name (see pgcoord.lock_key).
func (l *Lock) Key() int64 { return l.key }

// Lost returns a channel closed when the current hold is lost: its session
// died or was cut off, or the coordinator stopped. A normal Release does not
// close it. While nothing is held (before the first Acquire, after Release)
// it returns the channel of the next hold, so a watcher may take it before
// Acquire; after a loss it stays closed until the next Acquire succeeds.
// Under Config.AsyncRelease, after Release it is the released hold's channel
// until the next Acquire: a loss only the queued unlock finds closes it late.
// After an Acquire that returned an error, the next Acquire makes a fresh
// channel (a try given up on may have held the lock for a moment, on the
// old one): take Lost again then.
//
// Every call looks at the hold's lease first: once the lease has run out (a
// pause longer than it, SIGSTOP, a stalled VM), the channel returned is
// already closed, whether or not the heartbeat has run since.
func (l *Lock) Lost() <-chan struct{} {
	l.mu.Lock()
	h, lost := l.hold, l.lost
	l.mu.Unlock()
	if h != nil {
		l.c.lookLease(h)
	}
	return lost
}

// BackendPID returns the server process id of the session that holds the
// lock (0 when not held), to find the hold in pg_locks, pg_stat_activity or
// pgcoord.held_locks.
func (l *Lock) BackendPID() int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hold == nil {
		return 0
	}
	return l.hold.pid
}

// Token returns the fencing token of the current hold, 0 when not held
// (before Acquire, after Release, or once the hold was lost).
// Tokens of successive holds of one name, by any member, strictly increase:
// pass it to a store that rejects writes carrying a token lower than one it
// has seen, and a holder that lost its lock without knowing cannot clobber
// its successor's work.
//
// Like Lost, it looks at the hold's lease first: 0 from the first call
// after the lease ran out.
func (l *Lock) Token() int64 {
	l.mu.Lock()
	h := l.hold
	l.mu.Unlock()
	if h == nil {
		return 0
	}
	l.c.lookLease(h)
	if l.c.holdLost(h) {
		return 0
	}
	return h.token
}

// Acquire takes the lock. It returns (true, nil) when acquired; (false, nil)
// when the lock is busy under NoWait or stayed busy for the whole Timeout;
// (false, ctx.Err()) when ctx ends first; (false, ErrAlreadyHeld) when this
// Lock already holds it; (false, ErrNotStarted) before Start or after Stop;
// (false, an error wrapping ErrDeadlock) when the wait closed a cycle of
// waits among members and was the youngest of it (see ErrDeadlock: checked
// only once a wait lasts a second, so a short wait costs nothing).
//
// Waiting happens on the server (pg_advisory_lock, woken as soon as the
// holder releases or its session dies), on a wait session that holds nothing
// else: cancelling ctx closes that session and so costs no other hold.
// Waits are served in arrival order across members, but for waits younger
// than 100 ms and tries, which may go first (docs/waits.md); a wait that
// lasts longer costs a ticket row and a few statements on the control
// session.
func (l *Lock) Acquire(ctx context.Context, b Blocking) (bool, error) {
	return l.acquireMode(ctx, b, false)
}

// AcquireShared takes the lock shared (a read lock): any number of shared
// holders at once, in any processes, or one exclusive holder (Acquire),
// never both. It returns as Acquire does (ErrDeadlock included); Release
// ends either mode.
//
// A waiting exclusive acquirer is not starved by a stream of shared ones:
// in this process shared claims queue behind a waiting exclusive one, and
// on the server a shared try or wait is refused, and queued, while an
// exclusive acquirer waits there, including one waiting beyond the session
// budget (it holds a writer's intent, see the package doc).
func (l *Lock) AcquireShared(ctx context.Context, b Blocking) (bool, error) {
	return l.acquireMode(ctx, b, true)
}

func (l *Lock) acquireMode(ctx context.Context, b Blocking, shared bool) (bool, error) {
	if l.err != nil {
		return false, l.err
	}
	if !l.c.running() {
		return false, ErrNotStarted
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if held := l.c.stats.held.Load(); held >= int64(l.c.cfg.MaxHeldLocks) {
		return false, fmt.Errorf("%w: this coordinator holds %d (MaxHeldLocks)", ErrTooManyLocks, held)
	}
	l.mu.Lock()
	if l.acquiring || (l.hold != nil && !l.c.holdLost(l.hold)) {
		l.mu.Unlock()
		return false, ErrAlreadyHeld
	}
	// A lost hold that was never Released is simply replaced, once its
	// in-process claim is gone (see awaitFreed).
	prev := l.hold
	l.hold = nil
	if l.lostUsed {
		l.lost = make(chan struct{})
		l.lostUsed = false
	}
	lost := l.lost
	l.acquiring = true
	l.mu.Unlock()
	if prev != nil {
		if err := prev.awaitFreed(ctx); err != nil {
			l.mu.Lock()
			l.acquiring = false
			l.mu.Unlock()
			return false, err
		}
	}

	h, err := l.c.acquire(ctx, l, b, shared, lost)
	// Used even if fencing fails below: the hold may be lost meanwhile.
	// And used by an Acquire that failed: a try given up on while its
	// batch ran (the caller's ctx ended, or the wait's: Stop, or the
	// deadlock detector's abort) may have taken the lock, with a hold made
	// on this channel that lives until the batch's leader gives the grant
	// back (session.undoGrants) and is lost if the session breaks first.
	// Shared with the next hold, the channel would close under it, and
	// close again when that hold is lost
	// (TestAbandonedTryKeepsItsLostChannel). Any error counts, not only
	// the caller's ctx's: the wait's ctx ends without it.
	used := h != nil || err != nil
	err = lockTableFull(err)
	if h != nil && l.c.cfg.Fencing {
		if ferr := l.c.advanceFence(ctx, h); ferr != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.opTimeout())
			_ = l.c.release(rctx, h)
			cancel()
			h, err = nil, ferr
		}
	}
	if !l.unqueued {
		l.c.countAcquire(h != nil, err)
	}

	l.mu.Lock()
	l.acquiring = false
	l.lostUsed = l.lostUsed || used
	if h != nil {
		l.hold = h
	}
	l.mu.Unlock()
	return h != nil, err
}

// Release releases the lock. It returns ErrNotHeld when this Lock does not
// hold it, and an error wrapping ErrLockLost when the hold had been lost (the
// lock was not protecting anything since then). ctx's cancellation is
// ignored: a lock is always released, bounded by an internal timeout.
func (l *Lock) Release(ctx context.Context) error {
	l.mu.Lock()
	h := l.takeHoldLocked()
	l.mu.Unlock()
	if h == nil {
		return ErrNotHeld
	}
	return l.c.release(ctx, h)
}

// releaseHold is Release of want only: when want is not l's current hold,
// it does nothing (nil). A caller that looked at one hold (Election.Resign,
// its term's) must not release another that an Acquire made meanwhile.
func (l *Lock) releaseHold(ctx context.Context, want *hold) error {
	l.mu.Lock()
	if want == nil || l.hold != want {
		l.mu.Unlock()
		return nil
	}
	h := l.takeHoldLocked()
	l.mu.Unlock()
	return l.c.release(ctx, h)
}

// takeHoldLocked takes l's current hold off l, for a release; called with
// l.mu held.
func (l *Lock) takeHoldLocked() *hold {
	h := l.hold
	l.hold = nil
	if h != nil && !l.c.cfg.AsyncRelease {
		// h's channel will not close now (or closed already): show the
		// next hold's. Under AsyncRelease the queued unlock may yet find
		// the lock lost (lostLate), so h's stays on show until Acquire.
		l.lost = make(chan struct{})
		l.lostUsed = false
	}
	return h
}

// isClosed reports whether ch is closed, without blocking.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
