package pgcoord

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// Start opens the control session and one lock session; the other lock
// sessions open when a name first needs them, so a member holding a lock or
// two has few backends (fewer to exit, and so a faster takeover, when its
// process dies).
func TestLockSessionsOpenOnFirstUse(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.LockSessions = 4 })
	backends := func() int { return backendsOf(t, c) }
	require.Equal(t, 2, backends(), "control and the first lock session")
	require.NotNil(t, c.lockSs[0].conn)
	for _, s := range c.lockSs[1:] {
		require.Nil(t, s.conn)
	}

	// Names until every lock session holds one; each opens its session.
	var held []*Lock
	used := map[uint64]bool{}
	for i := 0; len(used) < len(c.lockSs); i++ {
		l := c.GetLock(fmt.Sprintf("spread-%d", i))
		slot := uint64(l.Key()) % uint64(len(c.lockSs))
		if used[slot] {
			continue
		}
		used[slot] = true
		mustAcquire(t, l, NoWait)
		require.Equal(t, l.Key(), serverLockKeyOn(t, c.lockSs[slot].backendPID, l.Key()))
		held = append(held, l)
	}
	require.Equal(t, 1+len(c.lockSs), backends(), "control and every lock session (names register on the control session)")
	for _, l := range held {
		require.NoError(t, l.Release(ctx(t)))
	}
}

// serverLockKeyOn returns key if the backend pid holds advisory lock key,
// else 0.
func serverLockKeyOn(t *testing.T, pid int32, key int64) int64 {
	t.Helper()
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = $1
		  AND ((classid::bigint << 32) | objid::bigint) = $2`, pid, key).Scan(&n))
	if n == 0 {
		return 0
	}
	return key
}
