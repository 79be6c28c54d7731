package pgcoord

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestWaitSessionDialFails: a wait whose wait session cannot be opened (the
// dial fails: here the pool's BeforeConnect hook; in make fleet, a dial
// timing out on a busy server) waits beyond the budget and gets its lock,
// instead of failing the Acquire.
func TestWaitSessionDialFails(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p).GetLock("d")
	mustAcquire(t, holder, NoWait)
	c, err := New(Config{ConnString: testURL, Prefix: p, SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	var fail, failed atomic.Bool
	c.hooks.before = func(context.Context, *pgx.ConnConfig) error {
		if fail.Load() {
			failed.Store(true)
			return errors.New("simulated dial failure")
		}
		return nil
	}
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	fail.Store(true)
	res := waitAcquire(t, c.GetLock("d"))
	require.Eventually(t, func() bool { return failed.Load() && c.Stats().WaitsBeyondBudget >= 1 },
		10*time.Second, 5*time.Millisecond, "the wait session's dial failed and the wait went beyond the budget")
	require.NoError(t, holder.Release(ctx(t)))
	require.NoError(t, <-res)
}
