package pgcoord

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// Start opens the control session and the lock session, and every lock
// taken without a wait sits on that one lock session, however many: a
// member holding locks has two backends (fewer to exit, and so a faster
// takeover, when its process dies).
func TestHoldsShareTheLockSession(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	require.Equal(t, 2, backendsOf(t, c), "control and lock session")
	require.Len(t, c.lockSs, 1)
	var held []*Lock
	for i := range 20 {
		l := c.GetLock(fmt.Sprintf("spread-%d", i))
		mustAcquire(t, l, NoWait)
		require.Equal(t, l.Key(), serverLockKeyOn(t, c.lockSs[0].backendPID, l.Key()))
		held = append(held, l)
	}
	require.Equal(t, 2, backendsOf(t, c), "control and lock session (names register on the control session)")
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
