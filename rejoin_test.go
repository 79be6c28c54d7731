package pgcoord

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReconnectPutsBackPrunedGroups: a member cut off longer than the
// retention had its group memberships pruned (with its member row), and
// its reconnect brought back the member but not the memberships, though
// JoinGroup had succeeded and the docs say a reconnect keeps them. Now the
// reconnect writes back the ones this life joined, with their last
// capabilities, and no others; a reconnect that finds them in place
// writes nothing.
func TestReconnectPutsBackPrunedGroups(t *testing.T) {
	t.Parallel()
	// A database of its own: the Prune below deletes whatever is dead in
	// it, which on the shared one would be other tests' rows (tickets they
	// planted), as theirs would be this test's.
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) {
		cfg.ConnString = dbURL
		// The reconnect's first try comes 1-2 s after the cut, so that
		// the prune below runs while the member is cut off.
		cfg.InitialReconnectBackoff = 2 * time.Second
		cfg.MaxReconnectBackoff = 2 * time.Second
		cfg.Logger = keptLogger(t)
	})
	r := newCoord(t, p, func(cfg *Config) { cfg.ConnString = dbURL })
	conn := connect(t, dbURL)
	full := func(g string) string {
		f, _, err := c.groupName(g)
		require.NoError(t, err)
		return f
	}
	require.NoError(t, c.JoinGroup(ctx(t), "kept", map[string]int{"v": 1}))
	require.NoError(t, c.JoinGroup(ctx(t), "updated", map[string]int{"v": 1}))
	require.NoError(t, c.UpdateCapabilities(ctx(t), "updated", map[string]int{"v": 2}))
	require.NoError(t, c.JoinGroup(ctx(t), "left", nil))
	require.NoError(t, c.LeaveGroup(ctx(t), "left"))
	evs, err := r.WatchGroup(ctx(t), "updated")
	require.NoError(t, err)

	rows := func() map[string]string { // group -> capabilities and updated_at
		got := map[string]string{}
		rs, err := conn.Query(ctx(t), `SELECT group_name, capabilities::text || ' ' || updated_at::text
			FROM pgcoord.group_members WHERE member_id = $1`, c.MemberID())
		require.NoError(t, err)
		for rs.Next() {
			var g, v string
			require.NoError(t, rs.Scan(&g, &v))
			got[g] = v
		}
		require.NoError(t, rs.Err())
		return got
	}
	live := func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.live_members WHERE member_id = $1`, c.MemberID()).Scan(&n))
		return n == 1
	}
	cut := func() {
		t.Helper()
		_, err := conn.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, c.control.backendPID)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return !live() }, 5*time.Second, 5*time.Millisecond, "the member lock is freed")
	}
	reconnected := func(before uint64) {
		t.Helper()
		require.Eventually(t, func() bool { return c.Stats().Reconnects > before && live() }, 15*time.Second, 10*time.Millisecond, "reconnected")
	}

	// A reconnect with the memberships in place writes nothing.
	before := rows()
	require.Len(t, before, 2)
	n := c.Stats().Reconnects
	cut()
	reconnected(n)
	require.Equal(t, before, rows(), "memberships in place are not written again")

	// Cut off past the retention: a prune deletes the member row and its
	// memberships, as it would after an hour of silence.
	n = c.Stats().Reconnects
	cut()
	_, err = conn.Exec(ctx(t), `UPDATE pgcoord.members SET last_heartbeat = now() - interval '2 hours' WHERE member_id = $1`, c.MemberID())
	require.NoError(t, err)
	res, err := r.Prune(ctx(t), MinRetention)
	require.NoError(t, err)
	require.Equal(t, int64(2), res.GroupMembers, "the prune ran while the member was cut off (%+v)", res)
	require.Empty(t, rows())
	reconnected(n)

	got := rows()
	require.Len(t, got, 2, "kept and updated are back, left is not: %v", got)
	require.Contains(t, got, full("kept"))
	require.Contains(t, got, full("updated"))
	members, err := r.GroupMembers(ctx(t), "updated")
	require.NoError(t, err)
	require.Len(t, members, 1)
	var caps map[string]int
	require.NoError(t, json.Unmarshal(members[0].Capabilities, &caps))
	require.Equal(t, map[string]int{"v": 2}, caps, "the capabilities last written")
	// The watcher saw the member leave at each cut and come back after.
	for {
		ev := nextEvent(t, evs, 10*time.Second)
		if ev.Kind == Joined && members[0].StartedAt.Equal(ev.Member.StartedAt) {
			break
		}
	}
}
