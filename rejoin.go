package pgcoord

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// joinedGroups is what this life of the member joined: each group's full
// name, key and capabilities as last written. A reconnect puts back the
// memberships among them that a prune deleted while the member was cut off
// (see rejoinGroups), so that "a reconnect keeps the memberships" holds
// however long the cut lasted.
type joinedGroups struct {
	mu     sync.Mutex
	groups map[string]joinedGroup // by full name
}

type joinedGroup struct {
	key  int64
	caps string
}

// set records a join or an update of group full.
func (j *joinedGroups) set(full string, key int64, caps string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.groups == nil {
		j.groups = make(map[string]joinedGroup)
	}
	j.groups[full] = joinedGroup{key: key, caps: caps}
}

// forget records that the member is not in group full.
func (j *joinedGroups) forget(full string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.groups, full)
}

// reset forgets every group: a new life of the member begins (Start).
func (j *joinedGroups) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.groups = nil
}

// params returns the RejoinGroups arguments for member; ok is false when
// the member is in no group (no statement to send).
func (j *joinedGroups) params(member string) (p db.RejoinGroupsParams, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.groups) == 0 {
		return p, false
	}
	p.MemberID = member
	for full, g := range j.groups {
		p.GroupNames = append(p.GroupNames, full)
		p.Keys = append(p.Keys, g.key)
		p.Capabilities = append(p.Capabilities, g.caps)
	}
	return p, true
}

// rejoinGroups runs on a reconnect, on the new control connection, under
// the member lock just taken again: the memberships of joined that are
// gone are written again (one statement for all, nothing when the member
// joined no group; a membership still there is not touched). They go only
// by a prune of a member whose row was silent past the retention, that is
// a member cut off for at least MinRetention; readers did not count them
// while it was cut off (live_group_members needs the member lock) and
// count them again from here. A failure is logged, not fatal to the
// reconnect: the member runs, and the next reconnect tries again.
func (c *Coordinator) rejoinGroups(ctx context.Context, conn *pgx.Conn) {
	p, ok := c.joined.params(c.memberID)
	if !ok {
		return
	}
	if err := c.q.RejoinGroups(ctx, conn, p); err != nil {
		c.log.Warn("pgcoord: putting back the member's group memberships after a reconnect", "err", err)
	}
}
