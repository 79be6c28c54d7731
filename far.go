package pgcoord

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// farCheck is how often a coordinator with waits beyond its budget has them
// all try their locks (one batch per lock session: concurrent tries share a
// round trip): a holder that died (SIGKILL, a terminated backend) released
// its locks without the NOTIFY of an unlock, and this is what notices.
const farCheck = 100 * time.Millisecond

// farWaits serves the waits beyond the session budget: waits with no wait
// session of their own. One mechanism per coordinator wakes them, on the
// control session it already has:
//
//   - for each key waited for, the control session holds a shared lock on
//     the key's wait marker (a two-int advisory key). An unlock finds the
//     marker taken and then, only then, sends NOTIFY pgcoord_free with the
//     key (see the Unlock query), so releases nobody waits for cost nothing;
//   - the control session LISTENs on pgcoord_free and, while waits are
//     pending and nobody else needs the session, waits for notifications
//     (an idle session holds no snapshot);
//   - every farCheck, every wait whose key had no release notified in that
//     time tries its lock, the tries of a lock session going out as one
//     batch.
//
// (The check is a real try, not a statement that tries each key on the
// control session for an instant: such a phantom holder makes someone
// else's try fail, and releases without a NOTIFY, so that waiter would
// sleep until the next check.)
//
// The same listener serves election observers (Election.Observe) and
// group watchers (WatchGroup): while any is registered it also LISTENs on
// pgcoord_leader and pgcoord_group, whose payloads are an election's or a
// group's key, and wakes that key's watchers; a new connection
// wakes them all, since notifications may have been missed meanwhile.
//
// A woken wait tries its lock on a lock session; if someone else was
// quicker it waits again. The local table lets one goroutine per key wait
// on the server, so there is one entry per key here. Cancelling a wait
// removes its entry (the marker goes at the next round) and costs the other
// waits nothing.
type farWaits struct {
	c *Coordinator

	mu sync.Mutex
	// waiting maps key -> its wait.
	waiting map[int64]*farWaiter
	// changed is set when waiting changed since the listener last looked.
	changed atomic.Bool
	// kick wakes an idle listener (capacity 1).
	kick chan struct{}
	// watchers maps an election's key -> the wake channels (capacity 1)
	// of its observers (Election.Observe), woken by pgcoord_leader
	// notifications and whenever notifications may have been missed.
	watchers map[int64]map[chan struct{}]struct{}

	// The fields below belong to the listener goroutine.
	// conn is the control connection on which armed's markers are held and
	// LISTEN was run; a new connection has neither.
	conn  *pgx.Conn
	armed map[int64]bool
	// nextCheck is when the next dead-holder check is due (monoNow).
	nextCheck int64

	done chan struct{}
}

func (f *farWaits) init(c *Coordinator) {
	f.c = c
	f.waiting = map[int64]*farWaiter{}
	f.armed = map[int64]bool{}
	f.kick = make(chan struct{}, 1)
	f.watchers = map[int64]map[chan struct{}]struct{}{}
}

// watch registers an observer of the election whose lock key is key and
// returns its wake channel; the listener LISTENs on pgcoord_leader while
// any observer is registered.
func (f *farWaits) watch(key int64) chan struct{} {
	wake := make(chan struct{}, 1)
	f.mu.Lock()
	if f.watchers[key] == nil {
		f.watchers[key] = map[chan struct{}]struct{}{}
	}
	f.watchers[key][wake] = struct{}{}
	f.mu.Unlock()
	f.poke()
	return wake
}

// unwatch ends the observer registered as wake.
func (f *farWaits) unwatch(key int64, wake chan struct{}) {
	f.mu.Lock()
	delete(f.watchers[key], wake)
	if len(f.watchers[key]) == 0 {
		delete(f.watchers, key)
	}
	f.mu.Unlock()
	f.poke()
}

// wakeWatchers wakes every observer, to read the leader again: the
// notifications of a broken connection may have been missed.
func (f *farWaits) wakeWatchers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ws := range f.watchers {
		for wake := range ws {
			signal(wake)
		}
	}
}

// farWaiter is one wait beyond the budget.
type farWaiter struct {
	// wake (capacity 1) tells the wait to try its lock.
	wake chan struct{}
	// heard is when a release of its key was last notified (monoNow);
	// guarded by farWaits.mu. A key whose releases are heard needs no
	// dead-holder check: its holders are alive and letting go.
	heard int64
}

// add registers a wait for key and returns its wake channel.
func (f *farWaits) add(key int64) chan struct{} {
	w := &farWaiter{wake: make(chan struct{}, 1)}
	f.mu.Lock()
	f.waiting[key] = w
	f.mu.Unlock()
	f.poke()
	return w.wake
}

// remove ends the wait for key registered as wake.
func (f *farWaits) remove(key int64, wake chan struct{}) {
	f.mu.Lock()
	if w := f.waiting[key]; w != nil && w.wake == wake {
		delete(f.waiting, key)
	}
	f.mu.Unlock()
	f.poke()
}

// poke tells the listener that the waits changed.
func (f *farWaits) poke() {
	f.changed.Store(true)
	select {
	case f.kick <- struct{}{}:
	default:
	}
	f.c.control.interrupt()
}

// notified is the control session's OnNotification: it wakes the wait for
// the released key, if this coordinator has one. It runs inside pgx's read
// of the connection, so it only signals.
func (f *farWaits) notified(_ *pgconn.PgConn, n *pgconn.Notification) {
	if n.Channel != "pgcoord_free" && n.Channel != "pgcoord_leader" && n.Channel != "pgcoord_group" {
		return
	}
	key, err := strconv.ParseInt(n.Payload, 10, 64)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.Channel == "pgcoord_leader" || n.Channel == "pgcoord_group" {
		for wake := range f.watchers[key] {
			signal(wake)
		}
		return
	}
	if w := f.waiting[key]; w != nil {
		w.heard = monoNow()
		signal(w.wake)
	}
}

// signal sends on a wake channel without blocking (nil: nothing).
func signal(wake chan struct{}) {
	if wake == nil {
		return
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}

// wakeAll wakes every wait: when the control session cannot serve them,
// each tries its lock every farCheck instead.
func (f *farWaits) wakeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.waiting {
		signal(w.wake)
	}
}

// wakeQuiet is the dead-holder check: it wakes the waits whose key has had
// no release notified for a check period. Under contention most keys
// change hands more often than that, and their waits are left alone.
func (f *farWaits) wakeQuiet() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := monoNow()
	for _, w := range f.waiting {
		if time.Duration(now-w.heard) >= farCheck {
			signal(w.wake)
		}
	}
}

// snapshot returns the keys waited for now.
func (f *farWaits) snapshot() map[int64]bool {
	f.changed.Store(false)
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make(map[int64]bool, len(f.waiting))
	for k := range f.waiting {
		keys[k] = true
	}
	return keys
}

// loop is the listener: it runs from Start to Stop, and uses the control
// session only while waits beyond the budget are pending (or their markers
// are still to be dropped).
func (f *farWaits) loop() {
	defer close(f.done)
	ctx := f.c.runCtx
	for {
		if f.idle() {
			select {
			case <-ctx.Done():
				return
			case <-f.kick:
				continue
			}
		}
		err := f.c.control.do(ctx, f.serve)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The control session is down (reconnecting): the waits try
			// their locks themselves every farCheck until it is back.
			if f.conn != nil && f.conn.IsClosed() {
				f.conn, f.armed = nil, map[int64]bool{}
			}
			f.wakeAll()
			f.wakeWatchers()
			select {
			case <-ctx.Done():
				return
			case <-time.After(farCheck):
			}
		}
	}
}

// idle reports whether the listener has nothing to do: no waits, no
// observers, and no LISTEN left to undo.
func (f *farWaits) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiting) == 0 && len(f.watchers) == 0 && f.conn == nil
}

// watching reports whether any observer is registered.
func (f *farWaits) watching() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers) > 0
}

// serve runs one round on the control session (sem held): it brings the
// markers in line with the waits, runs the dead-holder check when due, and
// then waits for a notification until the next check, a change in the
// waits, or someone else wanting the session.
func (f *farWaits) serve(ctx context.Context, conn *pgx.Conn) error {
	c := f.c
	if conn != f.conn {
		// A new connection: its markers and LISTEN are gone, and releases
		// may have gone unnoticed meanwhile: check every key at once.
		f.armed = map[int64]bool{}
		f.conn = nil
		if err := c.q.Listen(ctx, conn); err != nil {
			return err
		}
		if err := c.q.ListenLeader(ctx, conn); err != nil {
			return err
		}
		if err := c.q.ListenGroup(ctx, conn); err != nil {
			return err
		}
		f.conn = conn
		f.nextCheck = 0
		// Leader changes may have gone unnoticed too.
		f.wakeWatchers()
	}
	want := f.snapshot()
	var arm, disarm []int64
	for k := range want {
		if !f.armed[k] {
			arm = append(arm, k)
		}
	}
	for k := range f.armed {
		if !want[k] {
			disarm = append(disarm, k)
		}
	}
	if len(disarm) > 0 {
		if err := c.q.UnlockWaitMarkers(ctx, conn, disarm); err != nil {
			return err
		}
		for _, k := range disarm {
			delete(f.armed, k)
		}
	}
	if len(arm) > 0 {
		if err := c.q.LockWaitMarkers(ctx, conn, arm); err != nil {
			return err
		}
		for _, k := range arm {
			f.armed[k] = true
		}
	}
	if len(arm) > 0 {
		// A newly marked key's wait tries at once: its lock may have been
		// released before the marker was there, with no NOTIFY.
		f.mu.Lock()
		for _, k := range arm {
			if w := f.waiting[k]; w != nil {
				signal(w.wake)
			}
		}
		f.mu.Unlock()
	}
	if now := monoNow(); now >= f.nextCheck {
		f.nextCheck = now + int64(farCheck)
		f.wakeQuiet()
	}
	if len(f.armed) == 0 && !f.watching() {
		// Nothing waits or observes any more: stop listening, so that
		// this session is not sent other coordinators' notifications.
		if err := c.q.Unlisten(ctx, conn); err != nil {
			return err
		}
		if err := c.q.UnlistenLeader(ctx, conn); err != nil {
			return err
		}
		if err := c.q.UnlistenGroup(ctx, conn); err != nil {
			return err
		}
		f.conn = nil
		return nil
	}
	return f.listen(conn, time.Duration(f.nextCheck-monoNow()))
}

// listen waits for a notification for at most d, ending early when the
// waits change or someone else wants the control session (see
// session.interrupt). Notifications are handled by notified.
func (f *farWaits) listen(conn *pgx.Conn, d time.Duration) error {
	s := f.c.control
	raw := conn.PgConn().Conn()
	s.listenMu.Lock()
	s.listening = true
	_ = raw.SetReadDeadline(time.Now().Add(d))
	s.listenMu.Unlock()
	defer func() {
		s.listenMu.Lock()
		s.listening = false
		_ = raw.SetReadDeadline(time.Time{})
		s.listenMu.Unlock()
	}()
	// Checked after listening is set: a change or a want that came before
	// is seen here, one that comes after moves the deadline.
	if f.changed.Load() || s.wanted.Load() > 0 || d <= 0 {
		return nil
	}
	// Without a context pgx watches nothing: the read deadline bounds the
	// wait, and a timeout leaves the connection usable.
	err := conn.PgConn().WaitForNotification(context.Background())
	var netErr net.Error
	if err != nil && errors.As(err, &netErr) && netErr.Timeout() && !conn.IsClosed() {
		return nil
	}
	return err
}
