package pgcoord

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/db"
)

// TestHeadroomCrowd: sessions of many coordinators that looked at the free
// slots at the same moment do not eat into the headroom together. The
// crowd is simulated: a connection that another client opens between this
// coordinator's look at the free slots and its own connect. The new
// session counts again once connected, finds the headroom gone, and closes
// itself; the wait goes beyond the budget and still gets its lock.
func TestHeadroomCrowd(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, map[string]string{"max_connections": "20"})
	p := testPrefix(t)
	holder := newCoord(t, p, func(cfg *Config) { cfg.ConnString = srv.URL() })
	c, err := New(Config{ConnString: srv.URL(), Prefix: p, SkipMigrations: true, ConnectionHeadroom: 5, Logger: quietLogger()})
	require.NoError(t, err)
	var crowdMu sync.Mutex
	var crowd []*pgx.Conn
	var crowdErr error
	var arm atomic.Bool
	c.hooks.before = func(ctx context.Context, _ *pgx.ConnConfig) error {
		if arm.CompareAndSwap(true, false) {
			conn, err := pgx.Connect(ctx, srv.URL())
			crowdMu.Lock()
			crowd, crowdErr = append(crowd, conn), err
			crowdMu.Unlock()
		}
		return nil
	}
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() {
		_ = c.Stop(context.Background())
		crowdMu.Lock()
		defer crowdMu.Unlock()
		for _, conn := range crowd {
			if conn != nil {
				_ = conn.Close(context.Background())
			}
		}
	})
	admin := connect(t, srv.URL())
	var usable, used int
	require.Eventually(t, func() bool {
		require.NoError(t, admin.QueryRow(ctx(t), db.FreeConnections).Scan(&usable, &used))
		return used == 5 // the two coordinators and admin
	}, 10*time.Second, 10*time.Millisecond)
	// Six free: one more session would leave five, the headroom, so the
	// first look lets a wait session open; the crowd then takes a slot.
	for range usable - used - 6 {
		_ = connect(t, srv.URL())
	}
	arm.Store(true)
	hl := holder.GetLock("h")
	mustAcquire(t, hl, NoWait)
	w := c.GetLock("h")
	res := waitAcquire(t, w)
	require.Eventually(t, func() bool { return c.Stats().RefusedSessions >= 1 && c.Stats().WaitsBeyondBudget >= 1 },
		10*time.Second, 5*time.Millisecond)
	crowdMu.Lock()
	require.NoError(t, crowdErr)
	require.Len(t, crowd, 1, "the crowd connected during the wait session's dial")
	crowdMu.Unlock()
	// (Its backend may take a moment to exit.)
	require.Eventually(t, func() bool { return backendsOn(t, admin, c) == 2 }, 10*time.Second, 5*time.Millisecond,
		"the session closed itself")
	require.NoError(t, admin.QueryRow(ctx(t), db.FreeConnections).Scan(&usable, &used))
	require.GreaterOrEqual(t, usable-used, 4, "no slot of the headroom is pgcoord's (admin's own is the fifth)")
	require.NoError(t, hl.Release(ctx(t)))
	require.NoError(t, <-res)
	require.NoError(t, w.Release(ctx(t)))
}
