package pgcoord

import (
	"context"
	"slices"
	"sync"
	"time"
)

// localTable does exclusion between the Locks of one coordinator. PostgreSQL
// session locks are reentrant, so two Locks of one name sharing a lock
// session would both "get" it; instead at most one Lock per key is acquiring
// or holding exclusively in this process, or any number shared
// (AcquireShared: each takes its own level of the server's shared lock), and
// the others wait here, in-process, in FIFO order: a claim that ends hands
// the key straight to the longest waiter, so a goroutine that releases and
// at once acquires again queues behind the others instead of winning every
// race. A shared claim queues behind an exclusive one that waits, so a
// stream of readers cannot starve a writer of this process. That also means
// only one goroutine per process waits on the server for a name
// exclusively.
type localTable struct {
	mu      sync.Mutex
	entries map[int64]*localSlot
	// spare keeps slots whose key nobody held or wanted any more, for the
	// next keys claimed: a slot is only ever used under mu, and one that
	// left entries is referred to by nobody (claim looks its key up again
	// after a wait), so it can be reused at once. Up to maxSpareSlots, so
	// that a burst of claims does not stay allocated.
	spare []*localSlot
}

// maxSpareSlots bounds localTable.spare: a coordinator's goroutines
// claiming distinct keys at once (the 64 of BenchmarkAcquireReleaseParallel)
// reuse their slots.
const maxSpareSlots = 128

// localSlot is a claimed key: its current claims and the claims queued for
// it. claim is the exclusive claim, or nil while readers (shared claims)
// hold it.
type localSlot struct {
	claim   *localEntry
	readers int
	queue   []*localWaiter
}

// localWaiter is a claim queued for a key; grant receives its entry, e,
// once granted.
type localWaiter struct {
	shared bool
	e      *localEntry
	grant  chan *localEntry
}

// localEntry is one claim of a key, kept by its claimer (a hold embeds
// it, so that a claim allocates nothing of its own). joined says a shared
// claim was granted while other shared claims held the key: this
// process's session may hold the key shared already, and a try there is
// granted whatever waits on the server (see TryJoinShared).
type localEntry struct {
	shared bool
	joined bool
	// ended is set, and freed (made only for someone who waits for the
	// end: see awaitFreed) closed, when the claim ends; both guarded by
	// the table's mu.
	ended bool
	freed chan struct{}
}

func (t *localTable) init() { t.entries = map[int64]*localSlot{} }

// admits reports whether slot can grant a claim of the given mode now,
// with nobody queued ahead.
func (slot *localSlot) admits(shared bool) bool {
	if len(slot.queue) > 0 || slot.claim != nil {
		return false
	}
	return shared || slot.readers == 0
}

// grantLocked records e as a new claim on slot; called with t.mu held.
func (slot *localSlot) grantLocked(shared bool, e *localEntry) *localEntry {
	*e = localEntry{shared: shared}
	if shared {
		e.joined = slot.readers > 0
		slot.readers++
	} else {
		slot.claim = e
	}
	return e
}

// claim takes key for the caller, exclusively or shared, recording the
// claim in e, which it returns. With noWait it returns nil at once when the
// key is not free for it; otherwise it queues
// until the key is handed to it, ctx ends (returning ctx's error) or
// deadline passes (nil, nil). A zero deadline means no deadline. waited
// reports whether it had to wait. ww, the wait's deadlock watch (nil for
// NoWait), learns its waiter's creator when the claim waits (see
// noteParent). long, when not nil, is called once, by the claiming
// goroutine, when the claim has waited queueAfter: a lock's wait then takes
// its place in the key's queue across coordinators while it still waits
// here (see Coordinator.acquire).
func (t *localTable) claim(ctx context.Context, key int64, shared, noWait bool, deadline time.Time, ww *waitWatch, e *localEntry, long func()) (_ *localEntry, waited bool, err error) {
	t.mu.Lock()
	slot, busy := t.entries[key]
	if !busy {
		if n := len(t.spare); n > 0 {
			slot = t.spare[n-1]
			t.spare[n-1] = nil
			t.spare = t.spare[:n-1]
		} else {
			slot = &localSlot{}
		}
		t.entries[key] = slot
	}
	if slot.admits(shared) {
		slot.grantLocked(shared, e)
		t.mu.Unlock()
		return e, false, nil
	}
	if noWait {
		t.mu.Unlock()
		return nil, false, nil
	}
	w := &localWaiter{shared: shared, e: e, grant: make(chan *localEntry, 1)}
	slot.queue = append(slot.queue, w)
	t.mu.Unlock()

	timeout, stop := deadlineTimer(deadline)
	defer stop()
	// A claim that waits queueAfter notes its creator for the deadlock
	// check (see noteParent); shorter ones, most, cost a timer.
	var note <-chan time.Time
	if ww != nil || long != nil {
		t := time.NewTimer(queueAfter)
		defer t.Stop()
		note = t.C
	}
	for {
		select {
		case e := <-w.grant:
			return e, true, nil
		case <-note:
			if ww != nil {
				ww.noteParent()
			}
			if long != nil {
				long()
			}
			note = nil
			continue
		case <-timeout:
		case <-ctx.Done():
			err = ctx.Err()
		}
		break
	}
	// Leave the queue; if the key was handed over meanwhile, pass it on.
	t.mu.Lock()
	if slot := t.entries[key]; slot != nil {
		if i := slices.Index(slot.queue, w); i >= 0 {
			slot.queue = slices.Delete(slot.queue, i, i+1)
			// Leaving may let those queued behind in (readers behind a
			// writer that gave up).
			t.handOnLocked(key, slot)
			t.mu.Unlock()
			return nil, true, err
		}
	}
	t.mu.Unlock()
	t.free(key, <-w.grant)
	return nil, true, err
}

// free ends the claim e on key and hands the key on in FIFO order. A
// claim already ended is left alone: two paths may free one claim (an
// acquire given up frees its own, and a loss of the session frees the
// claims of every hold on it, a given-up try's not yet undone among them),
// and a shared claim freed twice took a reader off the count twice, which
// let a writer of this process in beside a reader still holding the key
// (TestSharedClaimFreedOnce).
func (t *localTable) free(key int64, e *localEntry) {
	t.mu.Lock()
	if e.ended {
		t.mu.Unlock()
		return
	}
	slot := t.entries[key]
	if slot != nil {
		switch {
		case !e.shared && slot.claim == e:
			slot.claim = nil
		case e.shared && slot.readers > 0:
			slot.readers--
		}
		t.handOnLocked(key, slot)
	}
	e.ended = true
	freed := e.freed
	t.mu.Unlock()
	if freed != nil {
		close(freed)
	}
}

// awaitFreed waits until the claim e has ended (see free), or ctx ends.
func (t *localTable) awaitFreed(ctx context.Context, e *localEntry) error {
	t.mu.Lock()
	if e.ended {
		t.mu.Unlock()
		return nil
	}
	if e.freed == nil {
		e.freed = make(chan struct{})
	}
	freed := e.freed
	t.mu.Unlock()
	select {
	case <-freed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handOnLocked grants the key to the waiters at the head of the queue that
// it admits now (one exclusive, or every shared up to the next exclusive),
// and forgets a slot nobody holds or wants; called with t.mu held.
func (t *localTable) handOnLocked(key int64, slot *localSlot) {
	for len(slot.queue) > 0 && slot.claim == nil {
		w := slot.queue[0]
		if !w.shared && slot.readers > 0 {
			break
		}
		slot.queue = slices.Delete(slot.queue, 0, 1)
		w.grant <- slot.grantLocked(w.shared, w.e)
		if !w.shared {
			break
		}
	}
	if slot.claim == nil && slot.readers == 0 && len(slot.queue) == 0 {
		delete(t.entries, key)
		if len(t.spare) < maxSpareSlots {
			t.spare = append(t.spare, slot)
		}
	}
}

// deadlineTimer returns a channel that fires at deadline, and the func that
// stops its timer; a zero deadline (none) gives a nil channel, which never
// fires.
func deadlineTimer(deadline time.Time) (<-chan time.Time, func()) {
	if deadline.IsZero() {
		return nil, func() {}
	}
	t := time.NewTimer(time.Until(deadline))
	return t.C, func() { t.Stop() }
}
