package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord/db"
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

// hold is one acquisition of a lock: it lives on one session until Release
// or loss.
type hold struct {
	lock *Lock
	key  int64
	// shared: a shared (read) hold, taken by AcquireShared; released with
	// pg_advisory_unlock_shared.
	shared bool
	sess   *session
	entry  *localEntry
	token  int64
	// pid is the backend of the session's connection the hold lives on
	// (for tests and diagnostics).
	pid int32

	// op is the hold's try, then its unlock, on a lock session: one at a
	// time, so one op (and its wake channel) serves both.
	op lockOp

	lost     chan struct{}
	lostOnce sync.Once
	// The fields below are guarded by the coordinator's mu.
	ended bool
	cause error
	// dropped: released by closing its session, after its unlock failed
	// on a connection that stayed open (see session.dropForUnlock).
	dropped bool
	onLost  []func(error)
	// grantedAt is monoNow() at the grant; sinceRecorded is set once
	// sinceLoop wrote it to pgcoord.lock_since.
	grantedAt     int64
	sinceRecorded bool
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
	full := c.cfg.Prefix + name
	l := &Lock{c: c, name: name, full: full, key: hash.Key(full), lost: make(chan struct{})}
	if name == "" {
		l.err = fmt.Errorf("%w: empty name", ErrInvalidName)
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
	case !utf8.ValidString(full):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	for i := 0; i < len(full); i++ {
		if full[i] == 0 {
			return fmt.Errorf("%w: contains a NUL byte (PostgreSQL text cannot hold it)", ErrInvalidName)
		}
	}
	return nil
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
// Lock already holds it; (false, ErrNotStarted) before Start or after Stop.
//
// Waiting happens on the server (pg_advisory_lock, woken as soon as the
// holder releases or its session dies), on a wait session that holds nothing
// else: cancelling ctx closes that session and so costs no other hold.
func (l *Lock) Acquire(ctx context.Context, b Blocking) (bool, error) {
	return l.acquireMode(ctx, b, false)
}

// AcquireShared takes the lock shared (a read lock): any number of shared
// holders at once, in any processes, or one exclusive holder (Acquire),
// never both. It returns as Acquire does; Release ends either mode.
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
	used := h != nil // even if fencing fails below: the hold may be lost meanwhile
	err = lockTableFull(err)
	if h != nil && l.c.cfg.Fencing {
		if ferr := l.c.advanceFence(ctx, h); ferr != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.opTimeout())
			_ = l.c.release(rctx, h)
			cancel()
			h, err = nil, ferr
		}
	}
	if h != nil {
		l.c.stats.acquired.Add(1)
	} else if err == nil {
		l.c.stats.busy.Add(1)
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
	h := l.hold
	l.hold = nil
	if h != nil && !l.c.cfg.AsyncRelease {
		// h's channel will not close now (or closed already): show the
		// next hold's. Under AsyncRelease the queued unlock may yet find
		// the lock lost (lostLate), so h's stays on show until Acquire.
		l.lost = make(chan struct{})
		l.lostUsed = false
	}
	l.mu.Unlock()
	if h == nil {
		return ErrNotHeld
	}
	return l.c.release(ctx, h)
}

// acquire claims the key in-process, then on the server: one try on a lock
// session, then, if allowed to wait, a server-side wait on a wait session. A
// waiting acquire of a key found busy lately skips the try (see busyHint).
// lost is the channel the hold closes when lost: the one Lock.Lost returned
// while nothing was held.
func (c *Coordinator) acquire(ctx context.Context, l *Lock, b Blocking, shared bool, lost chan struct{}) (*hold, error) {
	var deadline time.Time
	if b.mode == blockTimeout {
		deadline = time.Now().Add(b.timeout)
	}
	if b.mode != blockNoWait {
		// Stop must end waits promptly; waits watch runCtx through ctx.
		// (NoWait never waits, and spares the hot path the context.)
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stopWatch := context.AfterFunc(c.runCtx, cancel)
		defer stopWatch()
	}

	waitStart := time.Now()
	var waited bool
	defer func() {
		if waited {
			c.observeWait(time.Since(waitStart))
		}
	}()
	entry, waited, err := c.local.claim(ctx, l.key, shared, b.mode == blockNoWait, deadline)
	if entry == nil {
		return nil, c.stoppedOr(err)
	}
	h := &hold{lock: l, key: l.key, shared: shared, entry: entry, lost: lost}
	done := false
	defer func() {
		if !done {
			c.local.free(l.key, entry)
		}
	}()

	if err := c.register(ctx, l); err != nil {
		return nil, c.stoppedOr(err)
	}
	if b.mode == blockNoWait || !c.busy.recent(l.key) {
		ok, err := c.try(ctx, h)
		if err != nil {
			return nil, c.stoppedOr(err)
		}
		if ok {
			done = true
			return h, nil
		}
		c.busy.mark(l.key)
		if b.mode == blockNoWait {
			return nil, nil
		}
	}
	waited = true
	ok, err := c.wait(ctx, h, deadline)
	if !ok {
		return nil, c.stoppedOr(err)
	}
	done = true
	return h, nil
}

// advanceFence records h's token in pgcoord.fences (Config.Fencing). It
// runs on the control session, which holds no named lock, detached from
// ctx (a cancelled statement would close that session): it may wait for an
// application transaction that guarded a write with the previous token.
func (c *Coordinator) advanceFence(ctx context.Context, h *hold) error {
	err := c.onControl(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return c.q.AdvanceFence(ctx, conn, db.AdvanceFenceParams{Key: h.key, Token: h.token})
	})
	if err != nil {
		return fmt.Errorf("pgcoord: recording fencing token of %q: %w", h.lock.full, err)
	}
	return nil
}

// lockTableFull types the server's "out of shared memory" (53200), which
// for lock statements means its lock table is full.
func lockTableFull(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "53200" {
		return fmt.Errorf("%w: %w", ErrLockTableFull, err)
	}
	return err
}

// stoppedOr turns the cancellation caused by Stop into ErrNotStarted.
func (c *Coordinator) stoppedOr(err error) error {
	if err != nil && !c.running() {
		return ErrNotStarted
	}
	return err
}

// try takes h's key on its lock session in one round trip, without
// waiting: (true, nil) when granted, with h recorded on the session.
func (c *Coordinator) try(ctx context.Context, h *hold) (bool, error) {
	s := c.lockSession(h.key)
	op := &h.op
	op.h, op.unlock = h, false
	s.run(op)
	if errors.Is(op.err, ErrTooManyConnections) && s != c.lockSs[0] {
		// The server is short of connection slots: carry on with the
		// lock session that is open.
		c.lockRefused.mark()
		s = c.lockSs[0]
		s.run(op)
	}
	if errors.Is(op.err, errLeaseExpired) {
		// The connection was dropped under the try (see addHold): once
		// more, on a new one.
		s.run(op)
	}
	if op.err != nil || op.token == 0 {
		return false, op.err
	}
	h.token = op.token
	return true, nil
}

// lockSession returns the lock session for key: always the same one while
// it can be open, so that a name's unlock and its next try in this process
// queue on one session in order. A session that is not open while sessions
// were refused lately (connection slots short) is passed over for the
// first, which Start opened: a try there may find the name still held by
// an unlock queued elsewhere (Config.AsyncRelease), and then just waits.
func (c *Coordinator) lockSession(key int64) *session {
	s := c.lockSs[uint64(key)%uint64(len(c.lockSs))]
	if s != c.lockSs[0] && s.raw.Load() == nil && c.lockRefused.recent() {
		return c.lockSs[0]
	}
	return s
}

// register makes sure l's name owns its key in the registry. It runs on the
// control session, which holds no named lock, detached from ctx: an insert
// stalled behind a table lock, or given up by its caller, costs no hold
// anything.
func (c *Coordinator) register(ctx context.Context, l *Lock) error {
	if c.names.known(l.key, l.full) {
		return nil
	}
	var got string
	err := c.onControl(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		for range 3 {
			got, err = c.q.RegisterLockName(ctx, conn, db.RegisterLockNameParams{Key: l.key, Name: l.full})
			// A concurrent first registration of the same name: no row
			// (it committed after this snapshot), or a unique violation on
			// the name (ON CONFLICT arbitrates on the key only). Either
			// way, the next try finds its row.
			var pgErr *pgconn.PgError
			if !errors.Is(err, pgx.ErrNoRows) && !(errors.As(err, &pgErr) && pgErr.Code == "23505") {
				break
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("pgcoord: registering lock name %q: %w", l.full, err)
	}
	if got != l.full {
		return fmt.Errorf("%w: %q and %q both hash to key %d", ErrKeyCollision, l.full, got, l.key)
	}
	c.names.add(l.key, l.full)
	return nil
}

// addHold records h on s, whose statement just took its lock. It refuses
// once Stop has begun (Stop releases every session's locks after it, so the
// server lock cannot outlive Stop), and on a connection whose lease was
// found run out (errLeaseExpired): its holds were reported lost and its
// socket is being closed, so a hold added now would be reported held while
// the server frees it. The caller then drops the connection itself (see
// session.dropConn), which frees the lock this statement took.
func (c *Coordinator) addHold(s *session, h *hold) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running() {
		return ErrNotStarted
	}
	if hook := testHookAddHold.Load(); hook != nil {
		c.mu.Unlock()
		(*hook)(s)
		c.mu.Lock()
	}
	if s.expiredGen == s.gen.Load() {
		return errLeaseExpired
	}
	h.sess, h.pid = s, s.backendPID
	s.holds[h] = struct{}{}
	c.stats.held.Add(1)
	h.grantedAt = monoNow() // for held_locks.since (see sinceLoop)
	return nil
}

// errLeaseExpired refuses a hold on a connection whose lease ran out while
// the statement that took the lock was under way.
var errLeaseExpired = fmt.Errorf("%w: the session's lease ran out as the lock was taken; try again", ErrLockAcquireFailed)

// testHookAddHold, when set by a test, runs in addHold before the lease
// test, so a test can make a lease run out at exactly that point.
var testHookAddHold atomic.Pointer[func(s *session)]

func (c *Coordinator) holdLost(h *hold) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return h.ended && h.cause != nil
}

// loseHolds ends every hold on s as lost: Lost channels close and
// loss callbacks run before the in-process claim is freed, so no other Lock
// of this process can take the name before its old holder was told.
func (c *Coordinator) loseHolds(s *session, cause error) {
	c.mu.Lock()
	lost := c.endHoldsLocked(s, cause)
	c.mu.Unlock()
	c.signalHoldsLost(s, lost)
}

// endHoldsLocked ends every hold on s with cause and returns them; called
// with c.mu held. signalHoldsLost must follow, without c.mu.
func (c *Coordinator) endHoldsLocked(s *session, cause error) []*hold {
	var lost []*hold
	for h := range s.holds {
		delete(s.holds, h)
		h.ended = true
		h.cause = cause
		lost = append(lost, h)
	}
	c.stats.held.Add(-int64(len(lost)))
	c.stats.lost.Add(uint64(len(lost)))
	return lost
}

// signalHoldsLost tells the holders of lost (just ended on s) and then frees
// their in-process claims.
func (c *Coordinator) signalHoldsLost(s *session, lost []*hold) {
	for _, h := range lost {
		h.signalLost(h.cause)
		c.local.free(h.key, h.entry)
		if s.kind == sessionWait {
			c.waits.put(s, false)
		}
	}
	switch {
	case len(lost) == 0:
	case errors.Is(lost[0].cause, errStopped):
		// Stop with locks still held is a normal shutdown, not a fault to
		// warn about; Lost() still closes, since the sections are no
		// longer protected.
		c.log.Info("pgcoord: locks released by Stop", "count", len(lost), "session", s.kind.String())
	default:
		c.log.Warn("pgcoord: locks lost", "count", len(lost), "session", s.kind.String(), "cause", lost[0].cause)
	}
}

// awaitFreed waits until a lost hold's in-process claim is freed. loseHolds
// closes Lost() and runs the loss callbacks before it frees the claim (so no
// other Lock of this process takes the name before its holder was told);
// a holder that saw Lost() and at once released or acquired again would
// otherwise find its own name busy in that moment. The wait is short: only
// the callbacks (which cancel contexts) run in between.
func (h *hold) awaitFreed(ctx context.Context) error {
	select {
	case <-h.entry.freed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitFreed is h.awaitFreed for Release, which ignores ctx's cancellation
// but is bounded all the same.
func (c *Coordinator) awaitFreed(ctx context.Context, h *hold) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opTimeout())
	defer cancel()
	_ = h.awaitFreed(ctx)
}

func (h *hold) signalLost(cause error) {
	h.lostOnce.Do(func() {
		close(h.lost)
		for _, f := range h.onLost {
			f(cause)
		}
	})
}

// lostLate reports a hold already released under AsyncRelease as lost after
// all: its unlock found the lock gone, so it may have been lost before
// Release.
//
// It may be called more than once for a hold (when its session broke, and
// again when the queued unlock ran): the loss counts, and is signalled, once.
func (c *Coordinator) lostLate(h *hold, cause error) {
	c.mu.Lock()
	first := h.cause == nil
	if first {
		h.cause = cause
	}
	cause = h.cause
	c.mu.Unlock()
	if first {
		c.stats.lost.Add(1)
	}
	h.signalLost(cause)
}

// onLoss registers f to run when h is lost, or runs it now if h already was.
func (c *Coordinator) onLoss(h *hold, f func(error)) {
	c.mu.Lock()
	if !h.ended {
		h.onLost = append(h.onLost, f)
		c.mu.Unlock()
		return
	}
	cause := h.cause
	c.mu.Unlock()
	if cause != nil {
		f(cause)
	}
}

// unlock runs h's unlock on its session: batched with other ops on a lock
// session, on its own on a wait session. It does nothing for a hold that
// ended meanwhile. ctx's cancellation is ignored.
func (c *Coordinator) unlock(ctx context.Context, s *session, h *hold) (released bool, err error) {
	if s.kind == sessionLock {
		op := &h.op
		op.h, op.unlock = h, true
		s.run(op)
		return op.released, op.err
	}
	// The caller's cancellation must not cut the unlock short (pgx would
	// close the connection): it runs under the internal bound only.
	err = s.do(context.WithoutCancel(ctx), func(ctx context.Context, conn *pgx.Conn) error {
		if c.holdEnded(h) {
			return nil
		}
		var err error
		released, err = c.unlockOn(ctx, conn, h)
		if err != nil && !conn.IsClosed() {
			if s.retryUnlock(ctx, conn, h) {
				released = true
				return nil
			}
			s.dropForUnlock(conn, h, err)
		}
		return err
	})
	return released, err
}

// release unlocks h on its session and frees the in-process claim.
func (c *Coordinator) release(ctx context.Context, h *hold) error {
	c.mu.Lock()
	if h.ended {
		cause := h.cause
		c.mu.Unlock()
		if cause != nil {
			c.awaitFreed(ctx, h)
			return cause
		}
		return ErrNotHeld
	}
	s := h.sess
	if s.kind == sessionLock && c.cfg.AsyncRelease {
		// End the hold now; the unlock follows (see Config.AsyncRelease).
		// This process's next holder of the name queues its try on the
		// same session after the unlock, so it cannot overtake it.
		h.ended = true
		delete(s.holds, h)
		c.stats.held.Add(-1)
		c.mu.Unlock()
		h.op.h = h
		s.runAsync(&h.op)
		c.local.free(h.key, h.entry)
		return nil
	}
	c.mu.Unlock()

	released, err := c.unlock(ctx, s, h)

	c.mu.Lock()
	if h.ended && h.dropped {
		// The unlock failed, and closing the session released the lock
		// instead: released all the same.
		c.mu.Unlock()
		c.local.free(h.key, h.entry)
		if s.kind == sessionWait {
			c.waits.put(s, false)
		}
		return nil
	}
	if h.ended {
		// Lost meanwhile (the session broke): loseHolds did the bookkeeping.
		cause := h.cause
		c.mu.Unlock()
		if cause == nil {
			cause = ErrLockLost
		}
		c.awaitFreed(ctx, h)
		return cause
	}
	h.ended = true
	delete(s.holds, h)
	c.stats.held.Add(-1)
	if err == nil && !released {
		// The server says this session did not hold it: something unlocked it
		// behind our back (pg_advisory_unlock_all, DISCARD ALL).
		h.cause = fmt.Errorf("%w: the server no longer held %q", ErrLockLost, h.lock.full)
	}
	cause := h.cause
	if cause != nil {
		c.stats.lost.Add(1)
	}
	c.mu.Unlock()

	if cause != nil {
		h.signalLost(cause)
	}
	c.local.free(h.key, h.entry)
	if s.kind == sessionWait {
		c.waits.put(s, err == nil)
	}
	if err != nil {
		return fmt.Errorf("pgcoord: releasing %q: %w", h.lock.full, err)
	}
	return cause
}
