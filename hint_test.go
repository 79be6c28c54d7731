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

	// The hint lasts busyHintTTL from requireBusy: a pass whose steps took
	// longer (a stalled test process) shows nothing either way, and is
	// run again, up to five times.
	for attempt := 1; ; attempt++ {
		mustAcquire(t, o, NoWait)
		marked := time.Now()
		requireBusy(t, l) // marks the key busy
		require.NoError(t, o.Release(ctx(t)))
		mustAcquire(t, l, Wait)
		took := time.Since(marked)
		pid := heldBy(t, l.Key())
		require.NoError(t, l.Release(ctx(t)))
		if took < busyHintTTL/2 {
			require.NotContains(t, lockPIDs(), pid, "held on a lock session: the try was not skipped")
			break
		}
		require.Less(t, attempt, 5, "five passes each took more than %v", busyHintTTL/2)
		t.Logf("pass %d took %v, more than half the hint's life: again", attempt, took)
		time.Sleep(busyHintTTL) // the hint of this pass ends
	}

	// NoWait always tries on a lock session.
	mustAcquire(t, l, NoWait)
	require.Contains(t, lockPIDs(), heldBy(t, l.Key()))
	require.NoError(t, l.Release(ctx(t)))

	time.Sleep(busyHintTTL + 100*time.Millisecond)
	mustAcquire(t, l, Wait)
	require.True(t, slices.Contains(lockPIDs(), heldBy(t, l.Key())), "the hint did not expire")
	require.NoError(t, l.Release(ctx(t)))
}
