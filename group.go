package pgcoord

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// Groups (tooz's group API): a member joins named groups with
// capabilities (any JSON), and others list a group's members or watch it.
// Membership is a row in pgcoord.group_members; it counts only while its
// member runs (pgcoord.live_group_members joins live_members), so a member
// that dies leaves its groups at once for every reader, without anyone
// deleting its rows. Joins, leaves and updates notify pgcoord_group, which
// the control session's listener passes to watchers; each watcher also
// reads the group every HeartbeatInterval, which finds members that died
// without a word and reconciles after a broken connection.

// Member is a running member, as Members and GroupMembers report it.
type Member struct {
	// ID is the member id (Prefix+AgentID).
	ID       string
	AgentID  string
	Hostname string
	PID      int
	// StartedAt and LastHeartbeat are on the database clock.
	StartedAt     time.Time
	LastHeartbeat time.Time
	// Capabilities are what the member gave JoinGroup or
	// UpdateCapabilities, as JSON; nil outside a group.
	Capabilities json.RawMessage
}

// EventKind says what a GroupEvent reports.
type EventKind int

const (
	// Joined: a member joined the group.
	Joined EventKind = iota + 1
	// Left: a member left the group (LeaveGroup, or its process died or
	// was cut off, or it stopped).
	Left
	// Updated: a member's capabilities changed.
	Updated
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case Joined:
		return "Joined"
	case Left:
		return "Left"
	case Updated:
		return "Updated"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// GroupEvent is a change of a group's membership, from WatchGroup.
type GroupEvent struct {
	Kind EventKind
	// Group is the group's name, without Prefix.
	Group string
	// Member is the member concerned: as it is now for Joined and Updated,
	// as it was last seen for Left.
	Member Member
}

// groupLockPrefix keys a group's notifications (the payload of
// pgcoord_group is the key of groupLockPrefix+Prefix+group).
const groupLockPrefix = "pgcoord.group:"

// groupName checks group and returns its full name and notification key.
func (c *Coordinator) groupName(group string) (full string, key int64, err error) {
	if group == "" {
		return "", 0, fmt.Errorf("%w: empty group name", ErrInvalidName)
	}
	full = c.cfg.Prefix + group
	if err := validateName(groupLockPrefix + full); err != nil {
		return "", 0, err
	}
	return full, hash.Key(groupLockPrefix + full), nil
}

// MaxCapabilitiesLen is the largest capabilities document, in bytes of JSON
// (with numbers' exponents written out in digits, as jsonb prints them),
// that JoinGroup and UpdateCapabilities take (ZooKeeper's limit on a node,
// tooz's first backend). Capabilities travel on the control session, which
// carries the member's liveness: a document that takes the server longer
// than the session's statement bound to store closed that session, and with
// it the member lock, so the member dropped out of every group
// (TestCapabilitiesServerCannotTakeRefused: 64 MiB). Every watcher of the
// group also reads every member's capabilities every HeartbeatInterval.
const MaxCapabilitiesLen = 1 << 20

// capabilitiesJSON encodes capabilities for the database.
func capabilitiesJSON(capabilities any) (string, error) {
	var b []byte
	if raw, ok := capabilities.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return "", fmt.Errorf("%w: capabilities are not valid JSON", ErrInvalidCapabilities)
		}
		b = raw
	} else {
		var err error
		if b, err = json.Marshal(capabilities); err != nil {
			return "", fmt.Errorf("%w: %w", ErrInvalidCapabilities, err)
		}
	}
	size, nul := jsonStored(b)
	if size > MaxCapabilitiesLen {
		return "", fmt.Errorf("%w: %d bytes of JSON as stored (numbers written out in full), more than MaxCapabilitiesLen (%d)", ErrInvalidCapabilities, size, MaxCapabilitiesLen)
	}
	if nul {
		return "", fmt.Errorf("%w: a string holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store", ErrInvalidCapabilities)
	}
	return string(b), nil
}

// jsonStored looks at valid JSON b as jsonb will store and print it: about
// how many bytes it takes (jsonb writes a number's exponent out in digits,
// so the 8 bytes 1e131071 print as 131,072: every reader of the group would
// read that), and whether a string holds the escape \u0000, which jsonb
// refuses (SQLSTATE 22P05).
func jsonStored(b []byte) (size int, nul bool) {
	size = len(b)
	for i := 0; i < len(b); {
		switch ch := b[i]; {
		case ch == '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					nul = nul || bytes.HasPrefix(b[i+1:], []byte("u0000"))
					i++ // the escaped character
				}
			}
			i++
		case ch == '-' || ch >= '0' && ch <= '9':
			j := i
			for j < len(b) && bytes.IndexByte([]byte("+-.0123456789eE"), b[j]) >= 0 {
				j++
			}
			if e := bytes.IndexAny(b[i:j], "eE"); e >= 0 {
				exp, err := strconv.Atoi(strings.TrimPrefix(string(b[i+e+1:j]), "+"))
				if err != nil || exp < -MaxCapabilitiesLen || exp > MaxCapabilitiesLen {
					exp = MaxCapabilitiesLen // out of any range jsonb stores
				}
				size += max(exp, -exp)
			}
			i = j
		default:
			i++
		}
	}
	return size, nul
}

// groupStmt runs fn on the control session for a group call.
func (c *Coordinator) groupStmt(ctx context.Context, what string, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	if !c.running() {
		return ErrNotStarted
	}
	if err := c.control.detached(ctx, fn); err != nil {
		return fmt.Errorf("pgcoord: %s: %w", what, c.stoppedOr(err))
	}
	return nil
}

// JoinGroup makes this member a member of group (creating the group) with
// capabilities, JSON-encoded (a json.RawMessage is taken as it is): at most
// MaxCapabilitiesLen bytes, with no NUL in a string (ErrInvalidCapabilities,
// before any I/O). Joining a group again replaces the capabilities. Watchers see Joined (Updated for
// a second join with new capabilities).
func (c *Coordinator) JoinGroup(ctx context.Context, group string, capabilities any) error {
	full, key, err := c.groupName(group)
	if err != nil {
		return err
	}
	caps, err := capabilitiesJSON(capabilities)
	if err != nil {
		return err
	}
	err = c.groupStmt(ctx, fmt.Sprintf("joining group %q", full), func(ctx context.Context, conn *pgx.Conn) error {
		return c.q.JoinGroup(ctx, conn, db.JoinGroupParams{GroupName: full, MemberID: c.memberID, Capabilities: []byte(caps), Key: key})
	})
	if err == nil {
		c.prims.group(group, true, func(st *groupStat) { st.joined = true })
		c.joined.set(full, key, caps)
	}
	return err
}

// LeaveGroup takes this member out of group; ErrNotJoined when it is not
// in it.
func (c *Coordinator) LeaveGroup(ctx context.Context, group string) error {
	full, key, err := c.groupName(group)
	if err != nil {
		return err
	}
	// Forgotten before the delete, not after: a reconnect puts back the
	// groups joined holds (rejoinGroups), and one in the middle of this
	// call, after a first run of the delete committed and its reply was
	// lost, wrote the membership back (watchers saw it join again), for
	// good when ctx ended before the delete ran again
	// (TestLostLeaveNotRejoined). A leave that fails leaves a membership
	// the member no longer means to hold: a prune may take it.
	c.joined.forget(full)
	var n int32
	var again rerun
	err = c.groupStmt(ctx, fmt.Sprintf("leaving group %q", full), func(ctx context.Context, conn *pgx.Conn) error {
		again.on(conn)
		var err error
		n, err = c.q.LeaveGroup(ctx, conn, db.LeaveGroupParams{GroupName: full, MemberID: c.memberID, Key: key})
		return err
	})
	if err == nil {
		// Out of the group, also when it was not in it (ErrNotJoined).
		c.prims.group(group, false, func(st *groupStat) { st.joined = false })
		// No row, when the statement ran again after its connection
		// broke: the first run's delete may have committed.
		if n == 0 && !again.after {
			err = fmt.Errorf("%w: group %q", ErrNotJoined, full)
		}
	}
	return err
}

// UpdateCapabilities replaces this member's capabilities in group;
// ErrNotJoined when it is not in it. Watchers see Updated.
func (c *Coordinator) UpdateCapabilities(ctx context.Context, group string, capabilities any) error {
	full, key, err := c.groupName(group)
	if err != nil {
		return err
	}
	caps, err := capabilitiesJSON(capabilities)
	if err != nil {
		return err
	}
	var n int32
	err = c.groupStmt(ctx, fmt.Sprintf("updating capabilities in group %q", full), func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		n, err = c.q.UpdateCapabilities(ctx, conn, db.UpdateCapabilitiesParams{GroupName: full, MemberID: c.memberID, Capabilities: []byte(caps), Key: key})
		return err
	})
	switch {
	case err == nil && n == 0:
		c.joined.forget(full)
		err = fmt.Errorf("%w: group %q", ErrNotJoined, full)
	case err == nil:
		c.joined.set(full, key, caps)
	}
	return err
}

// Groups returns the groups of this prefix that have a running member,
// without Prefix, sorted.
func (c *Coordinator) Groups(ctx context.Context) ([]string, error) {
	var names []string
	err := c.groupStmt(ctx, "listing groups", func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		names, err = c.q.ListGroups(ctx, conn, c.cfg.Prefix)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, strings.TrimPrefix(n, c.cfg.Prefix))
	}
	return out, nil
}

// GroupMembers returns the running members of group, with their
// capabilities, sorted by id; none for a group nobody (running) is in.
func (c *Coordinator) GroupMembers(ctx context.Context, group string) ([]Member, error) {
	full, _, err := c.groupName(group)
	if err != nil {
		return nil, err
	}
	ms, err := c.groupMembers(ctx, full)
	if err == nil {
		c.prims.groupRead(group, len(ms))
	}
	return ms, err
}

func (c *Coordinator) groupMembers(ctx context.Context, full string) ([]Member, error) {
	var rows []db.GroupMembersRow
	err := c.groupStmt(ctx, fmt.Sprintf("listing group %q", full), func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		rows, err = c.q.GroupMembers(ctx, conn, full)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(rows))
	for _, r := range rows {
		out = append(out, Member{
			ID: r.MemberID, AgentID: r.AgentID, Hostname: r.Hostname, PID: int(r.Pid),
			StartedAt: r.StartedAt.Time, LastHeartbeat: r.LastHeartbeat.Time,
			Capabilities: json.RawMessage(r.Capabilities),
		})
	}
	return out, nil
}

// Members returns the running members of this coordinator's prefix, sorted
// by id (Capabilities nil).
func (c *Coordinator) Members(ctx context.Context) ([]Member, error) {
	var rows []db.PrefixMembersRow
	err := c.groupStmt(ctx, "listing members", func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		rows, err = c.q.PrefixMembers(ctx, conn, c.cfg.Prefix)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(rows))
	for _, r := range rows {
		out = append(out, Member{
			ID: r.MemberID, AgentID: r.AgentID, Hostname: r.Hostname, PID: int(r.Pid),
			StartedAt: r.StartedAt.Time, LastHeartbeat: r.LastHeartbeat.Time,
		})
	}
	return out, nil
}

// forgetGroups deletes the group memberships a previous life of this
// member left (Start, under the member lock, before the member row is live
// again, so that no reader sees them come back). Without it, a member
// restarted with the same id (a fixed AgentID) was back in its old groups,
// with their old capabilities, without joining
// (TestRestartedMemberNotInOldGroups). A role not granted the groups' table
// has no memberships to forget, and is not asked to. Failing costs only
// what it prevents, so it is logged, not returned.
func (c *Coordinator) forgetGroups(ctx context.Context, conn *pgx.Conn) {
	may, err := c.q.MayForgetGroups(ctx, conn)
	if err == nil && may {
		err = c.q.ForgetGroups(ctx, conn, c.memberID)
	}
	if err != nil {
		c.log.Warn("pgcoord: deleting the member's group memberships of a previous life", "err", err)
	}
}
