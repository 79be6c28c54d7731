package pgcoord

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Stop racing the heartbeat (a 10 ms heartbeat: Stop nearly always lands
// mid-beat or mid-ping) still leaves every lock free for others when it
// returns: 200 times Start, Acquire, Stop, then another member's NoWait
// acquire must succeed at once.
func TestStopRacingHeartbeatFreesLocks(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	other := newCoord(t, p)
	for i := range 200 {
		c, err := New(Config{
			ConnString:        testURL,
			Prefix:            p,
			HeartbeatInterval: 10 * time.Millisecond,
			SkipMigrations:    true,
			Logger:            quietLogger(),
		})
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx(t)))
		name := fmt.Sprintf("stop-%d", i%4)
		// With a 10 ms heartbeat on a loaded machine the control session
		// is now and then taken for cut off (its beat not answered within
		// the interval) and reconnects; an acquire that needs it meanwhile
		// fails, which is not what this test is about: try again.
		var ok bool
		for try := 0; !ok; try++ {
			ok, err = c.GetLock(name).Acquire(ctx(t), NoWait)
			if err != nil && try < 50 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			require.NoError(t, err)
			require.True(t, ok, "iteration %d: %q busy before Stop", i, name)
		}
		// Let a few beats start, so Stop meets one in flight.
		time.Sleep(time.Duration(i%3) * 7 * time.Millisecond)
		require.NoError(t, c.Stop(ctx(t)))
		l := other.GetLock(name)
		ok, err = l.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		require.True(t, ok, "iteration %d: %q still held after Stop returned", i, name)
		require.NoError(t, l.Release(ctx(t)))
	}
}

// Stop honours its ctx's deadline for the polite part: with the member row
// locked by another transaction, marking it stopped blocks, and Stop
// returns at the deadline (with the error) instead of after its internal
// bound; the locks were released before that step, and every session is
// closed.
func TestStopHonoursDeadline(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	l := c.GetLock("held")
	mustAcquire(t, l, NoWait)
	tx, err := testPool.Begin(ctx(t))
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx(t), `SELECT 1 FROM pgcoord.members WHERE member_id = $1 FOR UPDATE`, c.MemberID())
	require.NoError(t, err)

	sctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = c.Stop(sctx)
	took := time.Since(start)
	require.Error(t, err, "the member row could not be marked stopped")
	require.Less(t, took, c.opTimeout(), "Stop ignored its deadline")
	require.Zero(t, heldBy(t, l.Key()), "the lock outlived Stop")
	require.NoError(t, tx.Rollback(ctx(t)))
	require.Eventually(t, func() bool { return backendsOf(t, c) == 0 }, 10*time.Second, 10*time.Millisecond,
		"sessions left open")
}

// Stop with a ctx already cancelled still closes every session.
func TestStopCancelledStillCloses(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	mustAcquire(t, c.GetLock("held"), NoWait)
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = c.Stop(cctx)
	require.Eventually(t, func() bool { return backendsOf(t, c) == 0 }, 10*time.Second, 10*time.Millisecond,
		"sessions left open")
}

// Heartbeat returns when its ctx ends, and leaves no goroutine behind: the
// beat runs on the coordinator's own heartbeat goroutine. The member row is
// locked by another transaction, so the beat's update blocks.
func TestHeartbeatLeavesNoGoroutine(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	tx, err := testPool.Begin(ctx(t))
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx(t), `SELECT 1 FROM pgcoord.members WHERE member_id = $1 FOR UPDATE`, c.MemberID())
	require.NoError(t, err)

	hctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, c.Heartbeat(hctx), context.DeadlineExceeded)
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	require.False(t, strings.Contains(stacks, "(*Coordinator).Heartbeat"), "a goroutine of Heartbeat is still running")
	require.NoError(t, tx.Rollback(ctx(t)))
	require.NoError(t, c.Heartbeat(ctx(t)))
}
