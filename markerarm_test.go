package pgcoord

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFailedArmLeavesNoMarker: the notifier takes the wait markers of the
// keys newly waited for beyond the budget in one statement, one by one. One
// marker held exclusively elsewhere makes the statement wait, and fail
// after the control session's lock_timeout; the markers it took before
// that outlive the failed statement. Before the fix they were not recorded
// as armed, so each retry took them again on top, and levels stayed on the
// control session for nobody after every wait had ended (each release of
// those keys then sending a NOTIFY to the whole fleet).
func TestFailedArmLeavesNoMarker(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	// A budget of two: every wait is beyond it (waits on the notifier).
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	const n = 6
	held := make([]*Lock, n)
	for i := range held {
		held[i] = holder.GetLock(fmt.Sprintf("k%d", i))
		mustAcquire(t, held[i], NoWait)
	}
	// The last key's marker, taken exclusively: arming it waits.
	blocker := connect(t, testURL)
	last := held[n-1].Key()
	_, err := blocker.Exec(ctx(t), `SELECT pg_advisory_lock(($1::bigint >> 32)::integer, $1::bigint::bit(32)::integer)`, last)
	require.NoError(t, err)

	waits := make([]*Lock, n)
	errs := make(chan error, n)
	for i := range waits {
		waits[i] = c.GetLock(fmt.Sprintf("k%d", i))
		go func() {
			ok, err := waits[i].Acquire(ctx(t), Wait)
			if err == nil && !ok {
				err = errors.New("Wait returned false")
			}
			errs <- err
		}()
	}
	// The arm statement fails every round while the marker is held (a
	// round is the 200 ms lock_timeout and 100 ms before the next), each
	// time with the keys before the blocked one in its order taken.
	require.Eventually(t, func() bool { return c.Stats().WaitsBeyondBudget == n }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(2 * time.Second)
	_, err = blocker.Exec(ctx(t), `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return markerHeld(t, c, last) }, 10*time.Second, 5*time.Millisecond, "armed once the marker is free")

	for _, l := range held {
		require.NoError(t, l.Release(ctx(t)))
	}
	for range n {
		require.NoError(t, <-errs)
	}
	for _, l := range waits {
		require.NoError(t, l.Release(ctx(t)))
	}
	require.Eventually(t, func() bool { return markersHeld(t, c) == 0 }, 10*time.Second, 10*time.Millisecond,
		"wait markers left on the control session after every wait ended")
}
