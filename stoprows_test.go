package pgcoord

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNoDeadlockFromStoppedMembersRows: a member that stops while it has a
// long wait published (it holds x and waits for y) is gone, and so are its
// holds; a wait of another member for x (now held by a third) that holds y
// merely waits, and is no deadlock. Its rows in long_waits were left
// behind by Stop and read as live for up to 3 s, so the wait was aborted
// with ErrDeadlock naming the stopped member.
func TestNoDeadlockFromStoppedMembersRows(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b, c := newCoord(t, p), newCoord(t, p), newCoord(t, p)
	ax, ay := a.GetLock("x"), a.GetLock("y")
	by, bx := b.GetLock("y"), b.GetLock("x")
	cx := c.GetLock("x")
	mustAcquire(t, by, NoWait)
	aDone := make(chan error, 1)
	go func() {
		mustAcquire(t, ax, NoWait)
		_, err := ay.Acquire(ctx(t), Timeout(20*time.Second))
		aDone <- err
	}()
	// a's wait is published (it holds x) once it has lasted a second.
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t),
			`SELECT count(*) FROM pgcoord.long_waits WHERE member_id = $1`, a.MemberID()).Scan(&n))
		return n > 0
	}, 10*time.Second, 10*time.Millisecond, "a's wait never published")
	require.NoError(t, a.Stop(ctx(t)))
	require.ErrorIs(t, <-aDone, ErrNotStarted)
	mustAcquire(t, cx, NoWait) // x was freed by a's Stop; c holds it and works
	// b holds y and waits for x, on this goroutine: c never waits, so
	// there is no cycle, only a wait that ends with its timeout.
	began := time.Now()
	ok, err := bx.Acquire(ctx(t), Timeout(3*time.Second))
	require.NoError(t, err, "after %v", time.Since(began).Round(time.Millisecond))
	require.False(t, ok)
}
