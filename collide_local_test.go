package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A name whose key this process registered for another name is refused with
// ErrKeyCollision at once, while the other name is held: not reported busy
// (NoWait), nor left waiting for a key no wait can give it. A real SHA-256
// collision cannot be produced, so the second Lock is given the first's key
// by hand, as a colliding name would have it.
func TestInProcessKeyCollisionRefused(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	held := c.GetLock("first")
	mustAcquire(t, held, NoWait)
	other := c.GetLock("second")
	other.key = held.key

	for _, b := range []Blocking{NoWait, Timeout(5 * time.Second)} {
		start := time.Now()
		ok, err := other.Acquire(ctx(t), b)
		require.False(t, ok, "%v", b)
		require.ErrorIs(t, err, ErrKeyCollision, "%v", b)
		require.Contains(t, err.Error(), "first", "%v", b)
		// Refused before any wait: well under the timeout.
		require.Less(t, time.Since(start), 2*time.Second, "%v", b)
	}
	// The first name's hold is untouched, and nothing was taken for the other.
	select {
	case <-held.Lost():
		t.Fatal("the held name was lost")
	default:
	}
	require.NotZero(t, heldBy(t, held.Key()))
	require.NoError(t, held.Release(ctx(t)))
	// Released, the other name is still refused: the registry owns the key
	// for the first.
	ok, err := other.Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrKeyCollision)
}
