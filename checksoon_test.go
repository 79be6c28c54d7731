package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A break that one session's statement finds makes the coordinator check
// its other sessions at once (checkSoon): a holder idle on a wait session,
// whose backend ended with the others (a restart, a failover), is told
// within a round trip rather than at its next ping. The heartbeat is 10 s
// here, so that only this check can tell it within the second allowed.
func TestBreakChecksOtherSessions(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.HeartbeatInterval = 10 * time.Second })
	holder := newCoord(t, p).GetLock("a")
	mustAcquire(t, holder, NoWait)
	waited := c.GetLock("a")
	acquireAfterWait(t, waited, holder)
	held := c.GetLock("b")
	mustAcquire(t, held, NoWait)
	require.NotEqual(t, waited.BackendPID(), held.BackendPID(), "a granted wait is held on its wait session")

	terminateSessions(t, waited.BackendPID(), held.BackendPID())
	// A statement on the lock session finds its break.
	_, _ = c.GetLock("c").Acquire(ctx(t), NoWait)
	requireClosedWithin(t, held.Lost(), time.Second, "the hold on the lock session")
	requireClosedWithin(t, waited.Lost(), time.Second, "the hold idle on its wait session")
	require.ErrorIs(t, waited.Release(ctx(t)), ErrLockLost)
}
