package pgcoord

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// waitWatch is one waiting Acquire (or Campaign, or Semaphore.Acquire) as
// the deadlock detector sees it, and the context of its wait: a
// context.Context that ends with the caller's ctx, with Stop, or with
// cause ErrDeadlock when the wait is a deadlock's victim.
//
// That context is made lazily, on the first call of Done (any select on
// it, pgx's watch of a statement run under it, a context derived from it):
// a cancellable context costs a wait about ten allocations and a watcher
// per statement (issue 18: the contended handoff at 0.87 of raw with it,
// 0.90 without). Most waits never need it: the handoff's wait is one
// statement on an idle wait session, granted in its first slice. Such a
// statement runs under no context at all (see light), which is safe
// because nothing can end the wait before that slice is over:
//
//   - the caller's ctx cannot end (its Done is nil, or light says no);
//   - Stop moves the socket's deadline of such a statement to now (see
//     interruptLight), which ends it;
//   - the deadlock detector sees a wait only after deadlockTimeout, and
//     the timer that publishes it is armed when the context is made,
//     which every wait past light's window does (see light).
type waitWatch struct {
	c      *Coordinator
	gid    int64
	lock   *Lock      // the lock waited for, or
	sem    *Semaphore // the semaphore
	shared bool
	began  int64 // monoNow
	// parent is the caller's ctx.
	parent context.Context
	// made is the wait's context, once made (see make); nil before.
	made atomic.Pointer[madeCtx]
	// mu guards making the context, over and pending.
	mu sync.Mutex
	// over: end ran; a context made later is made ended.
	over bool
	// pending is an abort's cause that came before the context was made.
	pending error
	// parentGID is the goroutine that created the waiting one, once the
	// waiter has noted it (see noteParent); parentKnown tells 0 (none)
	// from not noted.
	parentGID   atomic.Int64
	parentKnown atomic.Bool
	// The fields below are guarded by deadlockBook.mu.
	id    int64
	long  bool
	ended bool
}

// madeCtx is a waitWatch's context once made.
type madeCtx struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool // ends the watch of runCtx
	timer  *time.Timer // publishes the wait at deadlockTimeout
}

// watchWait starts the watch of a wait by goroutine gid for lock or sem.
// The wait runs under the returned watch as its context. After
// deadlockTimeout the wait is published and checked. The caller ends the
// watch with end, and passes its error through result.
func (c *Coordinator) watchWait(ctx context.Context, gid int64, lock *Lock, sem *Semaphore, shared bool) *waitWatch {
	return &waitWatch{c: c, gid: gid, lock: lock, sem: sem, shared: shared, began: monoNow(), parent: ctx}
}

// make returns the wait's context, making it on first use.
func (w *waitWatch) make() *madeCtx {
	if m := w.made.Load(); m != nil {
		return m
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if m := w.made.Load(); m != nil {
		return m
	}
	w.c.deadlocks.made.Add(1)
	ctx, cancel := context.WithCancelCause(w.parent)
	m := &madeCtx{ctx: ctx, cancel: cancel, stop: func() bool { return false }}
	switch {
	case w.over:
		// Made after end (a goroutine the wait left behind looked at
		// it): ended, with nothing for end to undo.
		cancel(nil)
	case w.pending != nil:
		cancel(w.pending)
	case w.c.runCtx.Err() != nil:
		// Stop began: ended now, as Err said before it was made (an
		// AfterFunc on a done runCtx would cancel later, in a goroutine).
		cancel(nil)
	default:
		// Stop must end waits promptly; waits watch runCtx through ctx.
		m.stop = context.AfterFunc(w.c.runCtx, func() { cancel(nil) })
		// The deadlock timer runs from the wait's start, not from now.
		left := deadlockTimeout - time.Duration(monoNow()-w.began)
		m.timer = time.AfterFunc(max(left, 0), w.becameLong)
	}
	w.made.Store(m)
	return m
}

// light reports whether a wait session's statement for a slice of this
// long may run under no context (see waitWatch): only while the context
// is not made, the caller's ctx cannot end, and the wait is within its
// first queueAfter, so that the statement ends by 2*queueAfter, well
// before deadlockTimeout (a slice is bounded by the server's
// lock_timeout). Any later slice runs under the made context, which arms
// the deadlock timer.
func (w *waitWatch) light(slice time.Duration) bool {
	if w == nil || w.made.Load() != nil || w.parent.Done() != nil {
		return false
	}
	if _, ok := w.parent.Deadline(); ok {
		return false // a ctx of its own kind: its deadline is not the socket's
	}
	return slice <= queueAfter && time.Duration(monoNow()-w.began) < queueAfter
}

// Deadline is the caller's ctx's.
func (w *waitWatch) Deadline() (time.Time, bool) { return w.parent.Deadline() }

// Done makes the wait's context (see waitWatch) and returns its channel.
func (w *waitWatch) Done() <-chan struct{} { return w.make().ctx.Done() }

// Err is the made context's error; before it is made, the caller's ctx's,
// or Canceled after Stop or an abort, as the made context would say.
func (w *waitWatch) Err() error {
	if m := w.made.Load(); m != nil {
		return m.ctx.Err()
	}
	if err := w.parent.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	aborted := w.pending != nil
	w.mu.Unlock()
	if aborted || w.c.runCtx.Err() != nil {
		return context.Canceled
	}
	return nil
}

// Value is the caller's ctx's; once the context is made, the made one's,
// so that a context derived from the watch finds its cancelCtx.
func (w *waitWatch) Value(key any) any {
	if m := w.made.Load(); m != nil {
		return m.ctx.Value(key)
	}
	return w.parent.Value(key)
}

// abort ends the wait with cause (the deadlock detector's victim).
func (w *waitWatch) abort(cause error) {
	w.mu.Lock()
	m := w.made.Load()
	if m == nil && w.pending == nil {
		w.pending = cause
	}
	w.mu.Unlock()
	if m != nil {
		m.cancel(cause)
	}
}

// cause is why the wait's context ended: the abort's cause, or nil.
func (w *waitWatch) cause() error {
	if m := w.made.Load(); m != nil {
		return context.Cause(m.ctx)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending
}

// end ends the watch: the wait is over. Its row goes at the member's next
// check, which this asks for at once.
func (w *waitWatch) end() {
	w.mu.Lock()
	w.over = true
	m := w.made.Load()
	w.mu.Unlock()
	if m == nil {
		return // never made: no timer, never long
	}
	m.stop()
	m.cancel(nil)
	if m.timer == nil || m.timer.Stop() {
		return // never long: the book never saw it (no lock taken)
	}
	d := &w.c.deadlocks
	d.mu.Lock()
	w.ended = true
	long := w.long
	if long {
		delete(d.long, w)
	}
	d.mu.Unlock()
	if long {
		signal(d.kick)
	}
}

// result is the wait's error: the deadlock, when the wait was aborted as
// its victim, instead of the cancellation it caused.
func (w *waitWatch) result(err error) error {
	if err == nil || w.Err() == nil {
		return err
	}
	if cause := w.cause(); errors.Is(cause, ErrDeadlock) {
		return cause
	}
	return err
}

// beginLight marks a wait's statement on s as running under no context,
// for interruptLight; false after Stop began, when the statement must not
// run. Called with sem held, after the session set the statement's
// deadline on the socket.
func (s *session) beginLight() bool {
	s.lightMu.Lock()
	defer s.lightMu.Unlock()
	if s.c.runCtx.Err() != nil {
		return false
	}
	s.inLight = true
	return true
}

// endLight ends what beginLight began, before the session resets the
// socket's deadline: a deadline interruptLight moved is always reset.
func (s *session) endLight() {
	s.lightMu.Lock()
	s.inLight = false
	s.lightMu.Unlock()
}

// interruptLight ends a statement running under no context on s, if one
// is under way, as a cancelled context would: the read times out and pgx
// closes the connection (with it, a grant that raced this). Stop calls it
// after cancelling runCtx, so a statement either sees that in beginLight
// or is ended here.
func (s *session) interruptLight() {
	s.lightMu.Lock()
	defer s.lightMu.Unlock()
	if s.inLight {
		s.readDeadlineNow()
	}
}
