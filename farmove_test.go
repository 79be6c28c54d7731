package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMovedWaitDropsMarker: a wait beyond the budget that moves to a wait
// session when one frees up gives up its subscription to the key's
// releases, and with it the wait marker that makes every release of the
// key anywhere send NOTIFY. Before, it kept both for the rest of the wait.
func TestMovedWaitDropsMarker(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	// One wait session: the second wait goes beyond the budget.
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 3 })
	k1, k2 := holder.GetLock("k1"), holder.GetLock("k2")
	mustAcquire(t, k1, NoWait)
	mustAcquire(t, k2, NoWait)

	w1, w2 := c.GetLock("k1"), c.GetLock("k2")
	got1, got2 := make(chan error, 1), make(chan error, 1)
	wait := func(l *Lock, got chan error) {
		ok, err := l.Acquire(ctx(t), Timeout(20*time.Second))
		if err == nil && !ok {
			err = errNotMyTurn // (any error: it timed out)
		}
		got <- err
	}
	go wait(w1, got1)
	require.Eventually(t, func() bool { return serverWaitOf(t, c, w1.Key()) }, 10*time.Second, 5*time.Millisecond,
		"the first wait never waited on the wait session")
	go wait(w2, got2)
	require.Eventually(t, func() bool { return markerHeld(t, c, w2.Key()) }, 10*time.Second, 5*time.Millisecond,
		"the second wait never went beyond the budget")

	// The first wait is granted and released: the wait session frees up,
	// and the second wait moves onto it.
	require.NoError(t, k1.Release(ctx(t)))
	require.NoError(t, <-got1)
	require.NoError(t, w1.Release(ctx(t)))
	require.Eventually(t, func() bool { return serverWaitOf(t, c, w2.Key()) }, 10*time.Second, 5*time.Millisecond,
		"the second wait never moved to the wait session")
	require.Eventually(t, func() bool { return !markerHeld(t, c, w2.Key()) }, 5*time.Second, 5*time.Millisecond,
		"the wait moved to a wait session still holds its wait marker")

	require.NoError(t, k2.Release(ctx(t)))
	require.NoError(t, <-got2)
	require.NoError(t, w2.Release(ctx(t)))
}

// serverWaitOf reports whether a session of c waits on the server for key.
func serverWaitOf(t *testing.T, c *Coordinator, key int64) bool {
	t.Helper()
	var waiting bool
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objsubid = 1 AND NOT l.granted
		  AND l.classid::bigint = (($2::bigint >> 32) & 4294967295)
		  AND l.objid::bigint = ($2::bigint & 4294967295))`, c.sessionTag, key).Scan(&waiting))
	return waiting
}
