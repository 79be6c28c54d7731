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

// Release of a hold whose wait session broke under it returns the loss
// without dialling that session again: the hold went with the connection,
// and a new one would have nothing to unlock (before, Release redialled,
// waiting for the old backend to exit and for the connect, only to find
// the hold ended).
func TestReleaseAfterBreakDialsNothing(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	holder := newCoord(t, p).GetLock("a")
	mustAcquire(t, holder, NoWait)
	w := c.GetLock("a")
	acquireAfterWait(t, w, holder)
	w.mu.Lock()
	s := w.hold.sess
	w.mu.Unlock()
	require.Equal(t, sessionWait, s.kind)
	gen := s.gen.Load()

	terminateSessions(t, w.BackendPID())
	require.ErrorIs(t, w.Release(ctx(t)), ErrLockLost)
	require.Equal(t, gen, s.gen.Load(), "Release dialled the broken wait session again")
}
