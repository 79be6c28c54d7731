package pgcoord

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSemaphoreMembersWaitsKeepArrivalOrder: waits of one member for a
// semaphore, and one of another member that arrived after its first and
// before its others. The
// semaphore's waits of one process are not ordered in-process (its queue
// key is claimed by nobody), so the member standing "at the place of its
// earliest waiting goroutine" let its later wait go before the other
// member's earlier one: both slots, freed together, went to m's waits.
func TestSemaphoreMembersWaitsKeepArrivalOrder(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	x := newCoord(t, p)
	holders := []*Semaphore{x.Semaphore("pool", 2), x.Semaphore("pool", 2)}
	for _, h := range holders {
		ok, err := h.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		require.True(t, ok)
	}
	m, n := newCoord(t, p), newCoord(t, p)
	waiters := []*Semaphore{m.Semaphore("pool", 2), n.Semaphore("pool", 2)}
	names := []string{"m's first", "n's"}
	for i := range 3 {
		waiters = append(waiters, m.Semaphore("pool", 2))
		names = append(names, fmt.Sprintf("m's later %d", i))
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	errs := make(chan error, len(waiters))
	release := make(chan struct{})
	for i, s := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.Acquire(ctx(t), Timeout(20*time.Second))
			if err != nil || !ok {
				errs <- fmt.Errorf("%s: %v, %w", names[i], ok, err)
				return
			}
			mu.Lock()
			order = append(order, names[i])
			mu.Unlock()
			<-release
			errs <- s.Release(context.Background())
		}()
		time.Sleep(arrivalGap)
	}
	// m's first and n's have their tickets (m's others may wait in m's
	// process for their turn there).
	require.Eventually(t, func() bool {
		var got int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.wait_queue WHERE key = $1`,
			holders[0].queueKey()).Scan(&got))
		return got >= 2
	}, 10*time.Second, 5*time.Millisecond)
	time.Sleep(waitSlice)
	// Both slots free together: the two longest waiters take them.
	require.NoError(t, holders[0].Release(ctx(t)))
	require.NoError(t, holders[1].Release(ctx(t)))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) >= 2 },
		10*time.Second, time.Millisecond, "the freed slots were not taken")
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	got := append([]string(nil), order...)
	mu.Unlock()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.ElementsMatch(t, []string{"m's first", "n's"}, got[:2], "the two longest waiters took the slots (order %v)", got)
}
