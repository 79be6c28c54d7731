package pgcoord

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTimedOutSliceKeepsNoGrant: a wait slice whose lock_timeout fires as
// the lock is granted fails with 55P03, yet PostgreSQL keeps the grant
// (LockErrorCleanup records a lock granted while the error was being
// raised, and a session lock outlives the failed statement). The test
// makes that race certain: it freezes the waiting backend, grants it the
// key, lets the slice's timeout pass and wakes it. Before the fix the
// wait's next slice took the key again on top of the kept grant
// (session locks are reentrant), and its Release left the key held by the
// wait session for nobody.
func TestTimedOutSliceKeepsNoGrant(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = srv.URL() })
	l := c.GetLock("x")
	admin := connect(t, srv.URL())
	holder := connect(t, srv.URL())
	take := func() bool {
		var ok bool
		require.NoError(t, holder.QueryRow(ctx(t), `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&ok))
		return ok
	}
	require.True(t, take())

	got := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Timeout(30*time.Second))
		if err == nil && !ok {
			err = errors.New("not acquired")
		}
		got <- err
	}()
	waiting := func(pid int) (bool, bool) { // (in pg_locks, granted)
		var granted bool
		err := admin.QueryRow(ctx(t), `SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND pid = $1`, pid).Scan(&granted)
		return err == nil, granted
	}
	// Past the first slice (queueAfter), into a one-second one.
	time.Sleep(3 * queueAfter)
	raced := false
	for attempt := 0; attempt < 5 && !raced; attempt++ {
		var pid int
		require.Eventually(t, func() bool {
			return admin.QueryRow(ctx(t), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&pid) == nil
		}, 10*time.Second, time.Millisecond, "the wait is on the server")
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
		if in, granted := waiting(pid); in && !granted {
			// Frozen while waiting: the release grants it the key.
			var ok bool
			require.NoError(t, holder.QueryRow(ctx(t), `SELECT pg_advisory_unlock($1)`, l.key).Scan(&ok))
			require.True(t, ok)
			in, granted = waiting(pid)
			require.True(t, in && granted, "granted to the frozen waiter")
			time.Sleep(waitSlice + 300*time.Millisecond) // its slice's lock_timeout fires meanwhile
			raced = true
		}
		require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	}
	require.True(t, raced, "never caught the wait on the server")
	require.NoError(t, <-got)
	require.NoError(t, l.Release(ctx(t)))
	require.True(t, take(), "the key is still held after Release: the timed-out slice's grant was kept")
}
