package pgcoord

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A successful Acquire never hands out a Lost channel that is closed
// already. A try whose Acquire gave up (its ctx ended while the batch ran)
// can take the lock and make a hold with the Lock's next-hold channel; if
// that hold is lost before the leader gives its grant back (the session
// breaking in that window), the channel closes, and Acquire, which saw no
// hold made, used to reuse it: the next hold read lost at once, and a
// Semaphore let a second Acquire release its live slot. The window cannot
// be forced from outside (it lies between two statements of one
// goroutine), so the tests close the channel as that loss does.
func TestAcquireNeverReusesClosedLost(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))

	l := c.GetLock("x")
	l.mu.Lock()
	close(l.lost) // as loseHolds does for the given-up try's hold
	l.mu.Unlock()
	mustAcquire(t, l, NoWait)
	require.False(t, isClosed(l.Lost()), "the new hold reads lost at once")
	require.NoError(t, l.Release(ctx(t)))

	s := c.Semaphore("sem", 2)
	s.mu.Lock()
	close(s.lost)
	s.mu.Unlock()
	ok, err := s.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, isClosed(s.Lost()), "the new slot reads lost at once")
	ok, err = s.Acquire(ctx(t), NoWait)
	require.ErrorIs(t, err, ErrAlreadyHeld, "a second Acquire while the slot is live")
	require.False(t, ok)
	require.NoError(t, s.Release(ctx(t)))
}
