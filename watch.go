package pgcoord

import (
	"context"
	"log/slog"
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
// look returns false. A read look could not make (err) is tried again at
// the next wake; the first failure of a run is logged as a warning and the
// read that ends the run at info, so that a watcher that cannot read (a
// role without SELECT on the view, say) is not silent, and one that
// failed across a reconnect says so once, not every HeartbeatInterval.
// what names the watcher in those lines.
func (c *Coordinator) watchLoop(ctx context.Context, sub *subscription, now bool, what string, look func() (more bool, err error)) {
	tick := time.NewTicker(c.cfg.HeartbeatInterval)
	defer tick.Stop()
	failing := false
	for {
		if now {
			more, err := look()
			switch {
			case err != nil && !failing && ctx.Err() == nil && c.runCtx.Err() == nil:
				failing = true
				c.log.Warn("pgcoord: "+what+": read failed; reading again at the next notification or heartbeat",
					slog.Any("err", err))
			case err == nil && failing:
				failing = false
				c.log.Info("pgcoord: " + what + ": reading again")
			}
			if !more {
				return
			}
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
