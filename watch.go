package pgcoord

import (
	"context"
	"time"
)

// Watchers (Election.Observe, WatchGroup) share one loop: read the state,
// send what changed, then wait for the notifier to wake them (a
// notification for their key, a new listener connection, their LISTEN in
// place) or for a HeartbeatInterval to pass. The periodic read finds what
// no notification announces (a leader or member that died without a word)
// and reconciles after a broken connection; since each read is compared
// with the last one sent, a change is sent once however often the watcher
// is woken.

// watchLoop calls look at every wake of sub and every HeartbeatInterval,
// first at once when now is set, until ctx ends, the coordinator stops or
// look returns false.
func (c *Coordinator) watchLoop(ctx context.Context, sub *subscription, now bool, look func() bool) {
	tick := time.NewTicker(c.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		if now && !look() {
			return
		}
		now = true
		select {
		case <-ctx.Done():
			return
		case <-c.runCtx.Done():
			return
		case <-sub.wake:
		case <-tick.C:
		}
	}
}

// send sends v on out; false when ctx ended or the coordinator stopped
// first.
func send[T any](ctx context.Context, c *Coordinator, out chan<- T, v T) bool {
	select {
	case out <- v:
		return true
	case <-ctx.Done():
		return false
	case <-c.runCtx.Done():
		return false
	}
}
