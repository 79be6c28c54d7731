package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStatsCount(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	a := c.GetLock("a")
	mustAcquire(t, a, NoWait)
	require.Equal(t, Stats{Held: 1, Acquired: 1, Active: true}, c.Stats())

	blocker := other.GetLock("b")
	mustAcquire(t, blocker, NoWait)
	requireBusy(t, c.GetLock("b"))
	ok, err := c.GetLock("b").Acquire(ctx(t), Timeout(50*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)
	w := c.GetLock("b")
	acquireAfterWait(t, w, blocker)

	// Lose a: kill its session.
	_, err = testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, a.Key()))
	require.NoError(t, err)
	requireClosedWithin(t, a.Lost(), 5*time.Second, "Lost")

	s := c.Stats()
	require.EqualValues(t, 1, s.Held, "b is held")
	require.EqualValues(t, 2, s.Acquired)
	require.EqualValues(t, 2, s.Busy)
	require.EqualValues(t, 2, s.Waited, "the timed-out wait and the successful one")
	require.Greater(t, s.WaitTime, 50*time.Millisecond)
	require.EqualValues(t, 1, s.Lost)
	require.NoError(t, w.Release(ctx(t)))
	require.Zero(t, c.Stats().Held)
}
