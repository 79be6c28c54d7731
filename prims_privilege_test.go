package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The grants the README lists for shared locks, elections, semaphores and
// groups, on top of a coordinator's, are enough for each of them.
func TestLeastPrivilegePrimitives(t *testing.T) {
	t.Parallel()
	role := appRole(t, "")
	admin := connect(t, testURL)
	for _, stmt := range []string{
		`GRANT SELECT ON pgcoord.leaders, pgcoord.semaphore_holders, pgcoord.live_group_members TO ` + role,
		`GRANT EXECUTE ON FUNCTION pgcoord.wait_lock_shared(bigint, integer) TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.elections TO ` + role,
		`GRANT EXECUTE ON FUNCTION pgcoord.take_term(text, bigint, text, text, bigint), pgcoord.proclaim(text, bigint, text), pgcoord.end_term(text, bigint) TO ` + role,
		`GRANT SELECT, INSERT, UPDATE (last_used), DELETE ON pgcoord.semaphores TO ` + role,
		`GRANT EXECUTE ON FUNCTION pgcoord.semaphore_slot_key(text, integer, integer) TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.group_members TO ` + role,
	} {
		_, err := admin.Exec(ctx(t), stmt)
		require.NoError(t, err, stmt)
	}
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = withUser(t, testURL, role, "app-pw") })
	other := newCoord(t, p)

	// Shared: a try, and a wait (wait_lock_shared) behind a writer.
	r := c.GetLock("doc")
	mustAcquireShared(t, r, NoWait)
	require.NoError(t, r.Release(ctx(t)))
	w := other.GetLock("doc")
	mustAcquire(t, w, NoWait)
	got := make(chan error, 1)
	go func() {
		ok, err := r.AcquireShared(ctx(t), Wait)
		if err == nil && !ok {
			err = ErrNotHeld
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, w.Release(ctx(t)))
	require.NoError(t, <-got)
	require.NoError(t, r.Release(ctx(t)))

	// Elections.
	e := c.Election("boss")
	require.NoError(t, e.Campaign(ctx(t), "v1"))
	require.NoError(t, e.Proclaim(ctx(t), "v2"))
	l, err := e.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "v2", l.Value)
	octx, cancel := context.WithCancel(ctx(t))
	require.Equal(t, "v2", (<-e.Observe(octx)).Value)
	cancel()
	require.NoError(t, e.Resign(ctx(t)))

	// Semaphores.
	s := c.Semaphore("pool", 2)
	mustTake(t, s, NoWait)
	require.NoError(t, s.Release(ctx(t)))

	// Groups.
	require.NoError(t, c.JoinGroup(ctx(t), "g", map[string]int{"v": 1}))
	require.NoError(t, c.UpdateCapabilities(ctx(t), "g", map[string]int{"v": 2}))
	ms, err := c.GroupMembers(ctx(t), "g")
	require.NoError(t, err)
	require.Len(t, ms, 1)
	_, err = c.Groups(ctx(t))
	require.NoError(t, err)
	_, err = c.Members(ctx(t))
	require.NoError(t, err)
	wctx, wcancel := context.WithCancel(ctx(t))
	defer wcancel()
	evs, err := c.WatchGroup(wctx, "g")
	require.NoError(t, err)
	require.NoError(t, c.LeaveGroup(ctx(t), "g"))
	require.Equal(t, Left, nextEvent(t, evs, 10*time.Second).Kind)
	wcancel()
	for range evs {
	}
	require.NoError(t, c.Stop(ctx(t)))
}
