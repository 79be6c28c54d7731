package pgcoord

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNoDeadlockFromDeadMembersRows: a member that crashed (its sessions
// gone, so its holds and its member lock with them) leaves its long waits'
// rows in pgcoord.long_waits, fresh for up to 3 s. Such a row, "holds x and
// waits for y", made another member's wait for x, holding y, a deadlock,
// and that wait (the younger) was aborted with ErrDeadlock, while x was
// held by a third member that works. Rows count only while their member's
// member lock is held. The crash is the row it leaves: planted for a member
// whose member lock is free (a stopped member's), and kept fresh, as it is
// for 3 s after a crash, for the whole wait.
func TestNoDeadlockFromDeadMembersRows(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	b, c, dead := newCoord(t, p), newCoord(t, p), newCoord(t, p)
	by, bx := b.GetLock("y"), b.GetLock("x")
	cx := c.GetLock("x")
	mustAcquire(t, by, NoWait)
	mustAcquire(t, cx, NoWait)
	deadID := dead.MemberID()
	require.NoError(t, dead.Stop(ctx(t)))

	plant, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, err := testPool.Exec(plant, `
				INSERT INTO pgcoord.long_waits
				    (member_id, wait_id, goroutine, name, waits_for, shared, since, held_keys, held_shared, updated_at)
				VALUES ($1, 1, 1, $2, ARRAY[$3::bigint], false, now() - interval '5 seconds',
				        ARRAY[$4::bigint], ARRAY[false], now())
				ON CONFLICT (member_id, wait_id) DO UPDATE SET updated_at = now()`,
				deadID, by.full, by.Key(), bx.Key())
			if plant.Err() != nil {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			select {
			case <-plant.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	// b holds y and waits for x, which c holds and will release when it
	// likes: a wait, no cycle.
	began := time.Now()
	ok, err := bx.Acquire(ctx(t), Timeout(3*time.Second))
	require.NoError(t, err, "after %v", time.Since(began).Round(time.Millisecond))
	require.False(t, ok)
}
