package pgcoord

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLocalWaiterKeepsItsPlaceAcrossMembers: a goroutine that waits behind
// another goroutine of its coordinator (which holds the name) began its
// wait before another member's; it is served first (docs/waits.md: "a
// wait is never overtaken by a wait that began after it", the member
// standing "at the place of its earliest waiting goroutine"). Before, its
// ticket was taken only once its process's claim came to it, stamped with
// its arrival but after the other member's wait had been granted.
func TestLocalWaiterKeepsItsPlaceAcrossMembers(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	holder := a.GetLock("n")
	mustAcquire(t, holder, NoWait)
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wait := func(who string, l *Lock) {
		defer wg.Done()
		ok, err := l.Acquire(ctx(t), Timeout(20*time.Second))
		if err != nil || !ok {
			errs <- fmt.Errorf("%s: %v, %w", who, ok, err)
			return
		}
		mu.Lock()
		order = append(order, who)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		errs <- l.Release(context.Background())
	}
	wg.Add(2)
	go wait("a's second goroutine", a.GetLock("n"))
	time.Sleep(arrivalGap)
	go wait("b", b.GetLock("n"))
	time.Sleep(waitSlice + 200*time.Millisecond)
	require.NoError(t, holder.Release(ctx(t)))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, []string{"a's second goroutine", "b"}, order, "granted in arrival order")
}
