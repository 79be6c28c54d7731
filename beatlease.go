package pgcoord

import (
	"sync/atomic"
	"time"
)

// The member's lease, for leaders. An election's term is good only while
// its hold's session was heard from within the lease (lease.go) and also
// while the member's heartbeat was: a leader whose heartbeat has not
// succeeded for the lease (SessionTimeout less two heartbeats) loses its
// leadership, and the session its term's lock is on is closed (with the
// other holds on it, which are reported lost), at its first look or beat
// after that. This is etcd's model (a session's lease covers its election),
// and it lets a member judge a leader from the members table alone: one
// whose last_heartbeat is older than its lease (stored in its row) has
// been told, at its first look, that it leads no more (see Election.begin
// and docs/design.md, "Elections: the grace and when it is skipped").
// Other holds are not bound to the heartbeat: a control session busy with
// a long statement (a stalled registry insert) must not cost them.
//
// last_heartbeat is written with the server's now(), which is after the
// statement was sent; the member times its lease from the send, so it
// always counts its lease out before others see it out.

// beatLease is when (monoNow) the last heartbeat or registration that
// succeeded was sent; 0 before the first.
type beatLease struct{ sent atomic.Int64 }

// beatExpired reports whether the member's heartbeat has not succeeded
// within the lease.
func (c *Coordinator) beatExpired() bool {
	sent := c.beatLease.sent.Load()
	return sent != 0 && time.Duration(monoNow()-sent) > c.lease()
}

// beatHeard records that a heartbeat or registration sent at sent
// (monoNow) succeeded. If the lease had run out meanwhile (a pause, a long
// reconnect), the leaders' holds are ended first: a late beat must not
// revive a term that another member may already count as told.
func (c *Coordinator) beatHeard(sent int64) {
	if c.beatExpired() {
		for _, s := range c.checkedSessions() {
			s.checkLease()
		}
	}
	for {
		old := c.beatLease.sent.Load()
		if sent <= old || c.beatLease.sent.CompareAndSwap(old, sent) {
			return
		}
	}
}

// beatBound reports whether s must be expired for the member's heartbeat:
// the heartbeat's lease ran out and s carries an election's hold.
func (c *Coordinator) beatBound(s *session) bool {
	if !c.beatExpired() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for h := range s.holds {
		if h.lock.leader {
			return true
		}
	}
	return false
}
