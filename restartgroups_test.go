package pgcoord

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRestartedMemberNotInOldGroups: memberships belong to one life of a
// member. A member restarted with the same id (a fixed AgentID) is not in
// the groups its previous life joined until it joins them again; before,
// the rows its previous life left counted again as soon as its member row
// was live, with their old capabilities.
func TestRestartedMemberNotInOldGroups(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	fixed := func(cfg *Config) { cfg.AgentID = "fixed-agent" }
	observer := newCoord(t, p)

	first := newCoord(t, p, fixed)
	require.NoError(t, first.JoinGroup(ctx(t), "workers", map[string]int{"v": 1}))
	members, err := observer.GroupMembers(ctx(t), "workers")
	require.NoError(t, err)
	require.Len(t, members, 1)
	require.NoError(t, first.Stop(ctx(t)))

	second := newCoord(t, p, fixed)
	require.Equal(t, first.MemberID(), second.MemberID())
	members, err = observer.GroupMembers(ctx(t), "workers")
	require.NoError(t, err)
	require.Empty(t, members, "the restarted member is in its previous life's group without joining")

	require.NoError(t, second.JoinGroup(ctx(t), "workers", map[string]int{"v": 2}))
	members, err = observer.GroupMembers(ctx(t), "workers")
	require.NoError(t, err)
	require.Len(t, members, 1)
	require.JSONEq(t, `{"v": 2}`, string(members[0].Capabilities))
}
