package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A waiter does not hold a snapshot open for long: CREATE INDEX
// CONCURRENTLY, which waits for every older snapshot, finishes while a
// coordinator waits for a busy lock.
func TestWaiterDoesNotBlockCreateIndexConcurrently(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	blocker := other.GetLock("long")
	mustAcquire(t, blocker, NoWait)
	w := c.GetLock("long")
	res := make(chan bool, 1)
	go func() { ok, _ := w.Acquire(ctx(t), Wait); res <- ok }()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)

	table := "cic_" + randomSuffix()
	_, err := testPool.Exec(ctx(t), `CREATE TABLE `+table+` (id int)`)
	require.NoError(t, err)
	defer testPool.Exec(ctx(t), `DROP TABLE `+table)
	conn := connect(t, testURL)
	_, err = conn.Exec(ctx(t), `SET statement_timeout = '15s'`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx(t), `CREATE INDEX CONCURRENTLY ON `+table+` (id)`)
	require.NoError(t, err, "CREATE INDEX CONCURRENTLY was blocked by the waiter")
	// Still waiting (between two slices there may be a moment without).
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, blocker.Release(ctx(t)))
	require.True(t, <-res)
	require.NoError(t, w.Release(ctx(t)))
}
