package pgcoord

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// arrivalGap is the time between two waiters' arrivals in the order tests:
// long enough for each to have taken its ticket before the next arrives.
const arrivalGap = 250 * time.Millisecond

// waitOrder starts one waiter per entry of shared (true: AcquireShared),
// each on a coordinator of its own made by mk, arrivalGap apart, while
// holder holds the name; holder releases after every wait has crossed at
// least one wait slice. It returns the waiters' indexes in the order they
// were granted (each holds for 50 ms).
func waitOrder(t *testing.T, mk func() *Coordinator, holder *Lock, shared []bool) []int {
	t.Helper()
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	errs := make(chan error, len(shared))
	for i, sh := range shared {
		c := mk()
		l := c.GetLock(holder.Name())
		wg.Add(1)
		go func() {
			defer wg.Done()
			acquire := l.Acquire
			if sh {
				acquire = l.AcquireShared
			}
			ok, err := acquire(ctx(t), Wait)
			if err != nil || !ok {
				errs <- fmt.Errorf("waiter %d: %v, %w", i, ok, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			errs <- l.Release(context.Background())
		}()
		time.Sleep(arrivalGap)
	}
	// Every wait has crossed a slice end (waitSlice, 1 s) by now: without
	// the queue each would have rejoined the back of the server's.
	time.Sleep(waitSlice + 200*time.Millisecond)
	require.NoError(t, holder.Release(ctx(t)))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return order
}

// TestWaitOrderAcrossCoordinators: waits for one name, each from a
// coordinator of its own, are granted in arrival order, on wait sessions
// (the default budget) and beyond the budget (MaxSessions 2: no wait
// session at all). Without the queue (before migration 101) the order was
// [0 3 1 2] and [1 2 0 3] in the run.
func TestWaitOrderAcrossCoordinators(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"wait sessions", func(*Config) {}},
		{"beyond the budget", func(cfg *Config) { cfg.MaxSessions = 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := testPrefix(t)
			holder := newCoord(t, p).GetLock("fifo")
			mustAcquire(t, holder, NoWait)
			order := waitOrder(t, func() *Coordinator { return newCoord(t, p, tc.mod) }, holder,
				[]bool{false, false, false, false})
			require.Equal(t, []int{0, 1, 2, 3}, order, "granted in arrival order")
		})
	}
}

// TestReadersQueueBehindWriter: a reader that arrives after a queued writer
// waits for the writer, across coordinators; readers with no writer queued
// between them are granted together.
func TestReadersQueueBehindWriter(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p).GetLock("rw")
	mustAcquire(t, holder, NoWait)
	order := waitOrder(t, func() *Coordinator { return newCoord(t, p) }, holder,
		[]bool{true, false, true})
	require.Equal(t, []int{0, 1, 2}, order, "the second reader waits for the queued writer")
}

// TestWaitOrderWithinAndAcrossProcesses: a goroutine that queues behind
// another goroutine of its own coordinator keeps its arrival place across
// coordinators too (its ticket is taken when it arrives, not when its turn
// in the process comes).
func TestWaitOrderWithinAndAcrossProcesses(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p).GetLock("mixed")
	mustAcquire(t, holder, NoWait)
	a, b := newCoord(t, p), newCoord(t, p)
	// a, b, a, b: a's second waiter arrives before b's second.
	cs := []*Coordinator{a, b, a, b}
	next := 0
	order := waitOrder(t, func() *Coordinator { c := cs[next]; next++; return c }, holder,
		[]bool{false, false, false, false})
	require.Equal(t, []int{0, 1, 2, 3}, order, "granted in arrival order")
}

// TestDeadTicketStandsInNobodysWay: a ticket ahead is waited for while its
// backend lives, even with the name free, and stands in nobody's way once
// its backend is gone (a member that died gives nothing back): the wait
// behind it notices within queueRecheck.
func TestDeadTicketStandsInNobodysWay(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p).GetLock("dead")
	mustAcquire(t, holder, NoWait)
	// A ticket taken by a session that will end, as a member's does when
	// its process dies.
	ghost, err := pgx.Connect(ctx(t), testURL)
	require.NoError(t, err)
	defer ghost.Close(context.Background())
	_, err = ghost.Exec(ctx(t), `SELECT pgcoord.queue_enter($1, false, 'ghost', 0)`, holder.Key())
	require.NoError(t, err)

	waiter := newCoord(t, p).GetLock("dead")
	got := make(chan error, 1)
	go func() {
		ok, err := waiter.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = fmt.Errorf("Wait returned false")
		}
		got <- err
	}()
	// Past queueAfter the waiter has a ticket, behind the ghost's. Looked
	// at, not slept for: on a loaded machine the ticket can come later
	// than arrivalGap after queueAfter, and a release before it would let
	// the waiter in ahead of the ghost, ticketless.
	conn := connect(t, testURL)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.wait_queue WHERE key = $1`,
			holder.Key()).Scan(&n))
		return n == 2
	}, 10*time.Second, 5*time.Millisecond, "the waiter took no ticket")
	require.NoError(t, holder.Release(ctx(t)))
	select {
	case err := <-got:
		t.Fatalf("granted past a live ticket ahead (err %v)", err)
	case <-time.After(2 * arrivalGap):
	}
	require.NoError(t, ghost.Close(ctx(t)))
	gone := time.Now()
	select {
	case err := <-got:
		require.NoError(t, err)
		t.Logf("granted %v after the ticket ahead died", time.Since(gone))
	case <-time.After(queueRecheck + 3*time.Second):
		t.Fatal("a dead ticket holds the queue up")
	}
	require.NoError(t, waiter.Release(ctx(t)))
}

// TestPruneDeadTickets: Prune deletes the tickets whose backend is gone,
// and keeps those of live waits.
func TestPruneDeadTickets(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	conn := connect(t, dbURL)
	ghost := connect(t, dbURL)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString, cfg.Retention = dbURL, -1 })
	_, err := ghost.Exec(ctx(t), `SELECT pgcoord.queue_enter(1, false, 'ghost', 0)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx(t), `SELECT pgcoord.queue_enter(2, false, 'alive', 0)`)
	require.NoError(t, err)
	require.NoError(t, ghost.Close(ctx(t)))
	count := func(member string) (n int) {
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.wait_queue WHERE member_id = $1`, member).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool {
		_, err := c.Prune(ctx(t), time.Hour)
		require.NoError(t, err)
		return count("ghost") == 0
	}, 10*time.Second, 50*time.Millisecond, "the dead ticket is pruned")
	require.Equal(t, 1, count("alive"), "a live ticket is kept")
}

// TestSemaphoreWaitOrder: waits for a semaphore's slots, each from a member
// of its own, are granted in arrival order.
func TestSemaphoreWaitOrder(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holders := []*Semaphore{newCoord(t, p).Semaphore("pool", 2), newCoord(t, p).Semaphore("pool", 2)}
	for _, h := range holders {
		ok, err := h.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		require.True(t, ok)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		s := newCoord(t, p).Semaphore("pool", 2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.Acquire(ctx(t), Wait)
			if err != nil || !ok {
				errs <- fmt.Errorf("waiter %d: %v, %w", i, ok, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			errs <- s.Release(context.Background())
		}()
		time.Sleep(arrivalGap)
	}
	time.Sleep(waitSlice)
	requireTickets(t, holders[0].queueKey(), 4)
	// One slot frees: the longest waiter takes it; then the other, once
	// the first grant is seen (waited for, not slept for: two slots free
	// together let two waiters race to record their grants).
	require.NoError(t, holders[0].Release(ctx(t)))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) >= 1 },
		10*time.Second, time.Millisecond, "no waiter took the freed slot")
	require.NoError(t, holders[1].Release(ctx(t)))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, []int{0, 1, 2, 3}, order, "granted in arrival order")
}

// requireTickets waits until key has n tickets in pgcoord.wait_queue.
func requireTickets(t *testing.T, key int64, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var got int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.wait_queue WHERE key = $1`, key).Scan(&got))
		return got == n
	}, 10*time.Second, 5*time.Millisecond, "the key's %d waits never all had their tickets", n)
}
