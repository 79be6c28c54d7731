package pgcoord

import (
	"context"
	"time"
)

// Waits beyond the session budget: a wait with no wait session of its own
// costs no backend. It subscribes to its key's releases (topicFree, see
// notifier): the notifier holds a shared lock on the key's wait marker (a
// two-int advisory key) on the control connection, and an unlock that finds
// the marker taken, only then, sends NOTIFY pgcoord_free with the key, so
// releases nobody waits for cost nothing. Every subscriber of the key is
// woken (twelve readers waiting for one name are all woken by its release),
// and tries its lock on a lock session; if someone else was quicker it
// waits again. A holder that dies sends no NOTIFY: every farCheck the
// waits whose key had no release notified in that time try their lock
// (the tries of a lock session going out as one batch). The check is a
// real try, not a statement that tries each key on the control session for
// an instant: such a phantom holder would make someone else's try fail, and
// release without a NOTIFY. Cancelling a wait drops its subscription (and
// the marker, when it was the key's last) and costs the other waits
// nothing. A wait moves to a wait session, in the server's FIFO queue, as
// soon as one frees up.

// farCheck is how often a coordinator with waits beyond its budget has them
// all try their locks (one batch per lock session: concurrent tries share a
// round trip): a holder that died (SIGKILL, a terminated backend) released
// its locks without the NOTIFY of an unlock, and this is what notices.
const farCheck = 100 * time.Millisecond

// waitFar waits for h's key without a session of its own (see the package doc of far.go):
// woken by a release's NOTIFY or the dead-holder check, it tries the lock
// on a lock session. It returns moved when a wait session came free first
// (its slot is taken: the caller takes the session), so that the wait goes
// on in the server's FIFO queue.
//
// sub is the wait's subscription to the key's releases (topicFree): the
// caller keeps it from one far wait to the next (the first 100 ms, then
// with a ticket), so that its marker stays in place between them.
func (c *Coordinator) waitFar(ctx context.Context, h *hold, deadline time.Time, sub *subscription) (ok, moved bool, err error) {
	c.stats.farPhases.Add(1)
	// A writer whose try failed holds its intent while it waits here, in
	// no server queue, so that a stream of readers cannot starve it (see
	// pgcoord.wait_lock_shared). A handoff that succeeds at its first try costs no
	// intent.
	var intent writerIntent
	defer c.dropIntent(h, &intent)
	timeout, stop := deadlineTimer(deadline)
	defer stop()
	for {
		// No try first: the listener checks a key as soon as its marker
		// is taken, and wakes the wait if the lock is free by then.
		slots := c.waits.slots
		if c.waits.refused.recent() {
			slots = nil
		}
		select {
		case <-sub.wake:
		case slots <- struct{}{}:
			return false, true, nil
		case <-timeout:
			return false, false, nil
		case <-ctx.Done():
			return false, false, ctx.Err()
		}
		if ok, err := c.try(ctx, h); ok || err != nil {
			return ok, false, err
		}
		if !h.shared {
			c.takeIntent(h, &intent)
		}
	}
}
