package pgcoord

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// MaxHeldLocks stops Acquire before the coordinator holds more.
func TestMaxHeldLocks(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.MaxHeldLocks = 3 })
	var held []*Lock
	for i := range 3 {
		l := c.GetLock(fmt.Sprint("cap-", i))
		mustAcquire(t, l, NoWait)
		held = append(held, l)
	}
	ok, err := c.GetLock("cap-3").Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrTooManyLocks)
	require.NoError(t, held[0].Release(ctx(t)))
	mustAcquire(t, c.GetLock("cap-3"), NoWait)
}

// When the server's lock table fills anyway (here a server with a tiny one),
// Acquire fails with ErrLockTableFull and the coordinator carries on: its
// holds, its heartbeat and later acquires all work once locks are released.
func TestServerLockTableFull(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, map[string]string{"max_locks_per_transaction": "10", "max_connections": "20"})
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = srv.URL(); cfg.MaxHeldLocks = 100000 })

	var held []*Lock
	var full error
	for i := range 5000 {
		l := c.GetLock(fmt.Sprint("fill-", i))
		ok, err := l.Acquire(ctx(t), NoWait)
		if err != nil {
			full = err
			break
		}
		require.True(t, ok)
		held = append(held, l)
	}
	require.ErrorIs(t, full, ErrLockTableFull, "after %d locks", len(held))
	t.Logf("the server's lock table filled after %d locks", len(held))

	// Nothing was lost, and the coordinator recovers once locks are released.
	for _, l := range held[:len(held)/2] {
		require.NoError(t, l.Release(ctx(t)))
	}
	for _, l := range held[len(held)/2:] {
		select {
		case <-l.Lost():
			t.Fatalf("%q lost", l.Name())
		default:
		}
	}
	mustAcquire(t, c.GetLock("after"), NoWait)
	require.NoError(t, c.Heartbeat(ctx(t)))
	require.Eventually(t, c.IsActive, 5*time.Second, 10*time.Millisecond)
}
