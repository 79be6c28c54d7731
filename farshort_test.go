package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestShortTimeoutBehindQueue: a wait beyond the budget whose Timeout ends
// before its first 100 ms, behind another member's ticket, takes its
// ticket, is not at the head, and times out (it never subscribed to the
// key's releases: a nil subscription once made it panic).
func TestShortTimeoutBehindQueue(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	far := func(cfg *Config) { cfg.MaxSessions = 2 }
	holder := newCoord(t, p).GetLock("q")
	mustAcquire(t, holder, NoWait)
	first := waitAcquire(t, newCoord(t, p, far).GetLock("q"))
	time.Sleep(3 * queueAfter) // the first waiter holds a ticket by now
	ok, err := newCoord(t, p, far).GetLock("q").Acquire(ctx(t), Timeout(50*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, holder.Release(ctx(t)))
	require.NoError(t, <-first)
}
