package pgcoord

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petermattis/goid"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// SemaphoreLockPrefix starts the lock names of every semaphore's slots:
// slot i of semaphore name used with limit n is the lock
// SemaphoreLockPrefix+Prefix+name+"/"+n+"#"+i (so it shows in
// pgcoord.held_locks, and pgcoord.semaphore_holders lists them). Do not
// give a Lock such a name.
const SemaphoreLockPrefix = "pgcoord.semaphore:"

// MaxSemaphoreLimit is the largest limit a Semaphore accepts: each slot is
// a lock, and an Acquire may try them all.
const MaxSemaphoreLimit = 1024

// semaphoreRetry is how long a waiting Acquire waits on one slot before it
// tries all of them again: a waiter waits on the server (or beyond the
// budget, at no backend cost) for one slot at a time, so a holder of
// another slot that releases is noticed within this.
const semaphoreRetry = 200 * time.Millisecond

// Semaphore lets at most limit holders of a name (among a prefix's
// members) hold it at once, like Consul's semaphore. Each *Semaphore is one
// holder's slot. Create it with Coordinator.Semaphore.
//
// Each slot is a lock, held through the member's sessions like any Lock: a
// holder whose process dies frees its slot at once, and a holder whose
// session dies or goes silent is told on Lost, as a lock holder is.
// Holders that disagree on the limit would not exclude each other properly:
// the limit is part of the slot names, and a holder that finds a slot of
// another limit held gives its own back and fails with ErrLimitMismatch.
type Semaphore struct {
	c     *Coordinator
	name  string
	full  string
	limit int
	err   error

	mu        sync.Mutex
	acquiring bool
	held      *Lock
	lost      chan struct{}
	// lostUsed: an Acquire that failed may have left a slot's hold
	// made on lost, alive for a moment (see Lock.acquireMode): the next
	// Acquire makes a fresh one.
	lostUsed bool
	// registered is when (monoNow) the limit was last recorded; 0: never.
	registered int64
	// st counts the slots of the name held (Stats.Semaphores); uncount
	// ends the count of the slot held, once (Release, or its loss).
	st      *semaphoreStat
	uncount func()
}

// Semaphore returns a holder's slot of the semaphore name with limit
// holders at most. It does no I/O; a bad name or a limit outside 1 ..
// MaxSemaphoreLimit makes Acquire fail (ErrInvalidName, ErrInvalidLimit).
func (c *Coordinator) Semaphore(name string, limit int) *Semaphore {
	full := c.cfg.Prefix + name
	s := &Semaphore{c: c, name: name, full: full, limit: limit, lost: make(chan struct{})}
	switch {
	case name == "":
		s.err = fmt.Errorf("%w: empty semaphore name", ErrInvalidName)
	case limit < 1 || limit > MaxSemaphoreLimit:
		s.err = fmt.Errorf("%w: semaphore %q: limit %d is not between 1 and %d", ErrInvalidLimit, full, limit, MaxSemaphoreLimit)
	default:
		s.err = validateName(s.slotName(limit - 1))
	}
	return s
}

// Name returns the semaphore's name, without Prefix.
func (s *Semaphore) Name() string { return s.name }

// Limit returns how many may hold the semaphore at once.
func (s *Semaphore) Limit() int { return s.limit }

func (s *Semaphore) slotName(i int) string {
	return SemaphoreLockPrefix + s.full + "/" + strconv.Itoa(s.limit) + "#" + strconv.Itoa(i)
}

// queueKey is the key of the semaphore's wait queue (queue.go): the hash
// of its slots' common name, which no lock has.
func (s *Semaphore) queueKey() int64 {
	return hash.Key(SemaphoreLockPrefix + s.full + "/" + strconv.Itoa(s.limit))
}

// slot returns a Lock for slot i whose hold will close lost.
func (s *Semaphore) slot(i int, lost chan struct{}) *Lock {
	name := s.slotName(i)
	l := s.c.newNamedLock(name, name, "semaphore name")
	l.lost = lost
	l.unqueued = true
	return l
}

// Acquire takes a slot. It returns (true, nil) when taken; (false, nil)
// when every slot is busy under NoWait or stayed busy for the whole
// Timeout; (false, ctx.Err()) when ctx ends first; (false, ErrAlreadyHeld)
// when this Semaphore holds a slot; an error wrapping ErrLimitMismatch when
// someone holds the semaphore with another limit; an error wrapping
// ErrDeadlock when the wait closed a cycle of waits among members (every
// slot held by a waiter of the cycle) and was the youngest of it. A
// waiting Acquire waits
// on the server for one slot at a time (see the package doc, Sessions, for
// what that costs), trying every slot again every 200 ms; waits that last
// longer than 100 ms are served in arrival order across members
// (docs/waits.md).
func (s *Semaphore) Acquire(ctx context.Context, b Blocking) (took bool, err error) {
	if s.err != nil {
		return false, s.err
	}
	if !s.c.running() {
		return false, ErrNotStarted
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.acquiring || (s.held != nil && !s.lostNow(s.held)) {
		s.mu.Unlock()
		return false, ErrAlreadyHeld
	}
	prev, uncount := s.held, s.uncount
	s.held, s.uncount = nil, nil
	s.acquiring = true
	if prev != nil || s.lostUsed {
		s.lost = make(chan struct{})
		s.lostUsed = false
	}
	lost := s.lost
	if s.st == nil {
		s.st = s.c.prims.semaphore(s.name)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.acquiring = false
		// Any failure: a slot's try given up on may hold a hold made on
		// lost until given back (see Lock.acquireMode), whether the
		// caller's ctx ended or the wait's (Stop, a deadlock's abort).
		s.lostUsed = s.lostUsed || err != nil
		s.mu.Unlock()
	}()
	if prev != nil {
		_ = prev.Release(ctx) // a lost hold: let its claim go
		uncount()
	}
	// Counted here, once, as a Lock's Acquire is: the slots' own tries
	// (every slot, every round) are not (see Lock.unqueued).
	began := time.Now()
	waited := false
	defer func() {
		s.c.countAcquire(took, err)
		if waited {
			s.c.observeWait(time.Since(began))
		}
	}()
	if err := s.register(ctx); err != nil {
		return false, err
	}

	var deadline time.Time
	if b.mode == blockTimeout {
		deadline = time.Now().Add(b.timeout)
	}
	var w *waitWatch
	if b.mode != blockNoWait {
		// A wait for any of the slots, as the deadlock detector sees it.
		w = s.c.watchWait(ctx, goid.Get(), nil, s, false)
		ctx = w
		defer w.end()
		defer func() { err = w.result(err) }()
	}
	// The semaphore's waits queue across members as a lock's do
	// (queue.go), on a key of the semaphore's own: a wait that has lasted
	// queueAfter takes a ticket and, until it is at the head, waits off
	// the server instead of trying slots. The queue puts a member at the
	// place of its earliest ticket, which is right only while the
	// member's own waits keep their order in the process, as a lock's do
	// (localTable): so a semaphore's waits of one process claim the queue
	// key in-process, and only the earliest of them waits beyond its first
	// round of tries. Without it a member's later waits took the slots
	// before other members' earlier ones
	// (TestSemaphoreMembersWaitsKeepArrivalOrder).
	qkey := s.queueKey()
	var claim localEntry
	claimed := false
	defer func() {
		if claimed {
			s.c.local.free(qkey, &claim)
		}
	}()
	q := queuePlace{arrived: monoNow()}
	// Registered after the claim's free, so run before it: the ticket's
	// return is on its way before the next waiter of this process takes
	// its own.
	defer func() { s.c.leaveQueue(q.tk) }()
	start := rand.IntN(s.limit) // spread holders over the slots
	for round := 0; ; round++ {
		for k := range s.limit {
			l := s.slot((start+k)%s.limit, lost)
			ok, err := l.Acquire(ctx, NoWait)
			if err != nil {
				return false, err
			}
			if ok {
				return s.took(ctx, l)
			}
		}
		if b.mode == blockNoWait {
			return false, nil
		}
		waited = true
		if !claimed {
			e, _, err := s.c.local.claim(ctx, qkey, false, false, deadline, w, &claim, nil)
			if e == nil {
				return false, s.c.stoppedOr(err) // nil: the deadline passed
			}
			claimed = true
			if time.Duration(monoNow()-q.arrived) < queueAfter {
				continue // every slot is tried again
			}
			// It waited its turn in the process: it takes its place in
			// the queue before it tries, or the slot a waiter of this
			// process just left free would go to it before the waits of
			// other members that came earlier.
			s.c.enqueue(ctx, &q, qkey, false)
			if q.head {
				continue
			}
		}
		if q.tk == nil && time.Duration(monoNow()-q.arrived) >= queueAfter {
			s.c.enqueue(ctx, &q, qkey, false)
		}
		if !q.head && q.tk != nil {
			if ok, err := s.c.awaitTurn(ctx, &q, deadline); !ok {
				return false, err
			}
			continue // at the head: every slot is tried again
		}
		wait := semaphoreRetry
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return false, nil
			}
			wait = min(wait, left)
		}
		l := s.slot((start+round)%s.limit, lost)
		ok, err := l.Acquire(ctx, Timeout(wait))
		if err != nil {
			return false, err
		}
		if ok {
			return s.took(ctx, l)
		}
	}
}

// took finishes an Acquire that holds slot l: it checks that nobody holds
// the semaphore with another limit (the check runs after the slot is held,
// so of two holders that disagree the later one sees the earlier).
func (s *Semaphore) took(ctx context.Context, l *Lock) (bool, error) {
	// After a wait longer than nameCacheTTL the limit is recorded again,
	// now that a slot is held: pruning keeps the limits of held slots, so
	// the others' check below finds this one while it is held.
	err := s.register(ctx)
	if err == nil {
		var others []int32
		err = s.c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			var err error
			others, err = s.c.q.OtherSemaphoreLimits(ctx, conn, db.OtherSemaphoreLimitsParams{Semaphore: s.full, Slots: int32(s.limit)})
			return err
		})
		if err == nil && len(others) > 0 {
			err = fmt.Errorf("%w: semaphore %q is held with limit %d, this holder has %d", ErrLimitMismatch, s.full, others[0], s.limit)
		} else if err != nil {
			err = fmt.Errorf("pgcoord: semaphore %q: checking the limit: %w", s.full, s.c.stoppedOr(err))
		}
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.c.opTimeout())
		_ = l.Release(rctx)
		cancel()
		s.mu.Lock()
		s.lost = make(chan struct{}) // the released hold's channel stays open
		s.mu.Unlock()
		return false, err
	}
	// Counted before s.mu is taken: countHeld takes the Lock's mutex and
	// the coordinator's. (s.st was set by this Acquire, the only one.)
	uncount := s.countHeld(l)
	s.mu.Lock()
	s.held, s.uncount = l, uncount
	s.mu.Unlock()
	return true, nil
}

// countHeld counts l's slot as held in Stats.Semaphores until the
// returned function runs (Release) or the hold is lost, whichever is
// first.
func (s *Semaphore) countHeld(l *Lock) (uncount func()) {
	st := s.st
	if st == nil {
		return func() {} // past the cap of names counted
	}
	st.held.Add(1)
	var once sync.Once
	uncount = func() { once.Do(func() { st.held.Add(-1) }) }
	l.mu.Lock()
	h := l.hold
	l.mu.Unlock()
	if h != nil {
		s.c.onLoss(h, func(error) { uncount() })
	}
	return uncount
}

// register records the limit this semaphore is used with, and that it is
// in use (last_used, which pruning goes by), once per Semaphore and
// nameCacheTTL, as lock names are registered.
func (s *Semaphore) register(ctx context.Context) error {
	s.mu.Lock()
	at := s.registered
	s.mu.Unlock()
	if at != 0 && time.Duration(monoNow()-at) < nameCacheTTL {
		return nil
	}
	at = monoNow()
	err := s.c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return s.c.q.RegisterSemaphoreLimit(ctx, conn, db.RegisterSemaphoreLimitParams{Semaphore: s.full, Slots: int32(s.limit)})
	})
	if err != nil {
		return fmt.Errorf("pgcoord: semaphore %q: recording its limit: %w", s.full, s.c.stoppedOr(err))
	}
	s.mu.Lock()
	s.registered = at
	s.mu.Unlock()
	return nil
}

// lostNow reports whether l's hold was lost, after a look at its lease.
func (s *Semaphore) lostNow(l *Lock) bool {
	select {
	case <-l.Lost():
		return true
	default:
		return false
	}
}

// Release gives the slot back. It returns ErrNotHeld when this Semaphore
// holds no slot, and an error wrapping ErrLockLost when the slot had been
// lost. Like Lock.Release it ignores ctx's cancellation.
func (s *Semaphore) Release(ctx context.Context) error {
	s.mu.Lock()
	l, uncount := s.held, s.uncount
	s.held, s.uncount = nil, nil
	if l != nil {
		s.lost = make(chan struct{})
	}
	s.mu.Unlock()
	if l == nil {
		return ErrNotHeld
	}
	err := l.Release(ctx)
	uncount()
	return err
}

// Lost returns a channel closed when the slot held is lost (its session
// died or was cut off, its lease ran out, or the coordinator stopped); a
// normal Release does not close it. While no slot is held it returns the
// channel of the next hold, as Lock.Lost does. It looks at the lease
// first.
func (s *Semaphore) Lost() <-chan struct{} {
	s.mu.Lock()
	l, lost := s.held, s.lost
	s.mu.Unlock()
	if l != nil {
		return l.Lost()
	}
	return lost
}

// Token returns the fencing token of the slot held (its lock's token), 0
// when none is held or it was lost. Tokens of successive holds of one slot
// increase; a store guarded per slot can refuse a late holder's writes.
func (s *Semaphore) Token() int64 {
	s.mu.Lock()
	l := s.held
	s.mu.Unlock()
	if l == nil {
		return 0
	}
	return l.Token()
}

// Slot returns which slot (0 .. limit-1) is held, -1 when none.
func (s *Semaphore) Slot() int {
	s.mu.Lock()
	l := s.held
	s.mu.Unlock()
	if l == nil {
		return -1
	}
	i := strings.LastIndexByte(l.name, '#')
	n, err := strconv.Atoi(l.name[i+1:])
	if err != nil {
		return -1
	}
	return n
}

// BackendPID returns the server process id of the session holding the
// slot (0 when none is held), to find it in pg_locks or
// pgcoord.semaphore_holders.
func (s *Semaphore) BackendPID() int32 {
	s.mu.Lock()
	l := s.held
	s.mu.Unlock()
	if l == nil {
		return 0
	}
	return l.BackendPID()
}
