package pgcoord

import (
	"bytes"
	"context"
	"fmt"
)

// Watching a group: WatchGroup reads the membership and sends what changed,
// on the poll-and-diff loop that election observers share (watch.go).

// WatchGroup returns a channel of the changes to group's membership from
// now on: Joined, Left (also when a member dies: within a
// HeartbeatInterval of its member lock's release, which for a member cut
// off is at most SessionTimeout after it went silent) and Updated. It reads
// the membership now (an error is returned at once) and again at every
// notification and every HeartbeatInterval, and sends the difference: so a
// watch whose connection broke loses nothing when it comes back, each
// change arriving once (changes that cancel out between two reads, a join
// and leave, are not seen). The channel is closed when ctx ends or the
// coordinator stops.
func (c *Coordinator) WatchGroup(ctx context.Context, group string) (<-chan GroupEvent, error) {
	full, key, err := c.groupName(group)
	if err != nil {
		return nil, err
	}
	// Counted as a watch from before the first read, so that read's
	// member count is recorded.
	c.prims.group(group, true, func(st *groupStat) { st.watches++ })
	unwatch := func() { c.prims.group(group, false, func(st *groupStat) { st.watches-- }) }
	// Subscribed before the first read, so no change falls in between.
	sub := c.notifier.subscribe(topicGroup, key)
	last, err := c.groupMembers(ctx, full)
	if err != nil {
		c.notifier.unsubscribe(sub)
		unwatch()
		return nil, err
	}
	c.prims.groupRead(group, len(last))
	out := make(chan GroupEvent)
	// Counted, so that Stop returns only once it has ended.
	if !c.bg.start() {
		c.notifier.unsubscribe(sub)
		unwatch()
		return nil, ErrNotStarted
	}
	go func() {
		defer c.bg.done()
		defer close(out)
		defer unwatch()
		defer c.notifier.unsubscribe(sub)
		c.watchLoop(ctx, sub, false, fmt.Sprintf("watcher of group %q", full), func() (bool, error) {
			now, err := c.groupMembers(ctx, full)
			if err != nil {
				return true, err // reconciled at a later read
			}
			c.prims.groupRead(group, len(now))
			for _, ev := range groupDiff(group, last, now) {
				if !send(ctx, c, out, ev) {
					return false, nil
				}
			}
			last = now
			return true, nil
		})
	}()
	return out, nil
}

// groupDiff returns the events that turn membership before into after.
func groupDiff(group string, before, after []Member) []GroupEvent {
	old := make(map[string]Member, len(before))
	for _, m := range before {
		old[m.ID] = m
	}
	var evs []GroupEvent
	for _, m := range after {
		prev, ok := old[m.ID]
		switch {
		case !ok:
			evs = append(evs, GroupEvent{Kind: Joined, Group: group, Member: m})
		case !bytes.Equal(prev.Capabilities, m.Capabilities) || !prev.StartedAt.Equal(m.StartedAt):
			// (A member that restarted with the same id and joined again
			// in between shows as updated.)
			evs = append(evs, GroupEvent{Kind: Updated, Group: group, Member: m})
		}
		delete(old, m.ID)
	}
	for _, m := range before {
		if _, gone := old[m.ID]; gone {
			evs = append(evs, GroupEvent{Kind: Left, Group: group, Member: m})
		}
	}
	return evs
}
