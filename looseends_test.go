package pgcoord

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// TestStopEndsLockSessionDial: Stop ends a lock session's dial under way at
// once. The dial's ctx was a timeout of its own (5 s + two heartbeats) on
// Background, and Stop, which closes the session once it has its sem (the
// dial holds it), waited that long with its own ctx long gone. Here the
// dial never answers until its ctx ends.
func TestStopEndsLockSessionDial(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(testURL)
	require.NoError(t, err)
	var gate atomic.Bool
	var blocked atomic.Int32
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if gate.Load() {
			blocked.Add(1)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	pool, err := pgxpool.NewWithConfig(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	c, err := New(Config{Pool: pool, Prefix: testPrefix(t), SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	// The lock session's backend goes; the next try redials, into the gate.
	l := c.GetLock("x")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
	s := c.lockSession(l.Key())
	require.NoError(t, s.lock(ctx(t)))
	pid := s.backendPID
	s.unlock()
	gate.Store(true)
	_, err = testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1, 5000)`, pid)
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		_, err := l.Acquire(context.Background(), NoWait)
		got <- err
	}()
	require.Eventually(t, func() bool { return blocked.Load() > 0 }, 10*time.Second, time.Millisecond, "the try never redialled")

	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	began := time.Now()
	_ = c.Stop(sctx)
	took := time.Since(began)
	t.Logf("Stop took %v", took)
	require.Less(t, took, 3*time.Second, "Stop waited for the lock session's dial")
	err = <-got
	require.True(t, errors.Is(err, ErrNotStarted) || errors.Is(err, context.Canceled), "the try: %v", err)
}

// TestDeadlockRowsGoAfterFailedCheck: a member's published long waits are
// deleted once they end even when the check that should delete them fails
// (here for a revoked privilege; a control session reconnecting does the
// same). Before, the check loop ended after that failed check, and the
// rows stayed for other members to read as live waits.
func TestDeadlockRowsGoAfterFailedCheck(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	role := appRole(t, "")
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = withUser(t, testURL, role, "app-pw") })
	o := newCoord(t, p)
	busy := o.GetLock("busy")
	mustAcquire(t, busy, NoWait)

	done := make(chan error, 1)
	go func() {
		own := c.GetLock("own") // a hold the wait answers for: published
		mustAcquire(t, own, NoWait)
		defer func() { _ = own.Release(context.Background()) }()
		l := c.GetLock("busy")
		ok, err := l.Acquire(ctx(t), Timeout(20*time.Second))
		if err == nil && !ok {
			err = errors.New("timed out")
		}
		if ok {
			_ = l.Release(context.Background())
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return longWaitRows(t, c) == 1 }, 10*time.Second, 20*time.Millisecond,
		"the long wait was never published")

	_, err := testPool.Exec(ctx(t), `REVOKE ALL ON pgcoord.long_waits FROM `+role)
	require.NoError(t, err)
	require.NoError(t, busy.Release(ctx(t)))
	require.NoError(t, <-done)
	time.Sleep(time.Second) // the checks after the wait ended fail
	require.Equal(t, 1, longWaitRows(t, c))
	_, err = testPool.Exec(ctx(t), `GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.long_waits TO `+role)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return longWaitRows(t, c) == 0 }, 5*time.Second, 20*time.Millisecond,
		"the ended wait's row stayed after the failed check")
}
