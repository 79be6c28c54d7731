package pgcoord

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Twelve readers of one default-budget coordinator wait for a name another
// member holds exclusively: two on wait sessions, ten beyond the budget,
// all subscribed to the same key. When the writer releases, every reader
// must be woken and get its shared hold at once. (Before the notifier kept
// a list of subscribers per key, a second reader's wait replaced the
// first's wake-up, and one reader waited until the others released.)
func TestManyReadersBeyondBudget(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	writer := newCoord(t, p)
	c := newCoord(t, p)
	w := writer.GetLock("doc")
	mustAcquire(t, w, NoWait)

	const n = 12
	readers := make([]*Lock, n)
	got := make(chan error, n)
	for i := range readers {
		readers[i] = c.GetLock("doc")
		go func() {
			ok, err := readers[i].AcquireShared(ctx(t), Wait)
			if err == nil && !ok {
				err = errors.New("Wait returned false")
			}
			got <- err
		}()
	}
	require.Eventually(t, func() bool {
		return c.Stats().WaitsBeyondBudget >= n-2 && markerHeld(t, c, w.Key()) && waiters(t, w.Key()) == 2
	}, 20*time.Second, 10*time.Millisecond, "two reads wait on wait sessions, ten beyond the budget")

	released := time.Now()
	require.NoError(t, w.Release(ctx(t)))
	for range n {
		select {
		case err := <-got:
			require.NoError(t, err)
		case <-time.After(3 * time.Second):
			t.Fatalf("a reader still waits %v after the writer released", time.Since(released))
		}
	}
	t.Logf("all %d readers held the name %v after the writer released", n, time.Since(released))
	for _, r := range readers {
		require.NotZero(t, r.Token())
	}
	for _, r := range readers {
		require.NoError(t, r.Release(ctx(t)))
	}
}
