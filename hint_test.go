package pgcoord

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A key found busy goes straight to a server-side wait on its next waiting
// Acquire (granted at once when free by then), and back to the lock
// sessions once the hint expires.
func TestBusyKeySkipsTheTry(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	other := newCoord(t, p)
	l, o := c.GetLock("hinted"), other.GetLock("hinted")
	lockPIDs := func() []int32 {
		var pids []int32
		for _, s := range c.lockSs {
			pids = append(pids, s.backendPID)
		}
		return pids
	}

	mustAcquire(t, o, NoWait)
	requireBusy(t, l) // marks the key busy
	require.NoError(t, o.Release(ctx(t)))

	mustAcquire(t, l, Wait)
	require.NotContains(t, lockPIDs(), heldBy(t, l.Key()), "held on a lock session: the try was not skipped")
	require.NoError(t, l.Release(ctx(t)))

	// NoWait always tries on a lock session.
	mustAcquire(t, l, NoWait)
	require.Contains(t, lockPIDs(), heldBy(t, l.Key()))
	require.NoError(t, l.Release(ctx(t)))

	time.Sleep(busyHintTTL + 100*time.Millisecond)
	mustAcquire(t, l, Wait)
	require.True(t, slices.Contains(lockPIDs(), heldBy(t, l.Key())), "the hint did not expire")
	require.NoError(t, l.Release(ctx(t)))
}
