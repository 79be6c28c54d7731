package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// bouncerPool is a pool of conns clients through PgBouncer in transaction
// mode. PgBouncer 1.18 keeps no prepared statements across transactions,
// so the pool uses the exec mode (unnamed statements), as an app behind
// such a proxy must.
func bouncerPool(t *testing.T, conns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(startPgBouncer(t, "transaction"))
	require.NoError(t, err)
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// Through PgBouncer in transaction mode, 60 clients (more than PgBouncer's
// 20 server connections) each run transactions that read a counter, hold
// it a moment and write it back, under AcquireTx (Wait and Timeout): no
// two are ever inside at once and no update is lost.
func TestAcquireTxPgBouncerManyClients(t *testing.T) {
	t.Parallel()
	const clients, rounds = 60, 3
	pool := bouncerPool(t, clients)
	p := testPrefix(t)
	table := "txcounter_" + randomSuffix()
	_, err := testPool.Exec(ctx(t), `CREATE TABLE `+table+` (id int PRIMARY KEY, n int NOT NULL)`)
	require.NoError(t, err)
	defer testPool.Exec(context.Background(), `DROP TABLE `+table)
	_, err = testPool.Exec(ctx(t), `INSERT INTO `+table+` VALUES (1, 0)`)
	require.NoError(t, err)

	var inside, overlaps, timeouts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for r := 0; r < rounds; {
				b := Wait
				if (i+r)%2 == 1 {
					b = Timeout(250 * time.Millisecond)
				}
				done, err := func() (bool, error) {
					tx, err := pool.Begin(ctx(t))
					if err != nil {
						return false, err
					}
					defer tx.Rollback(context.Background())
					ok, err := AcquireTx(ctx(t), tx, p, "counter", b)
					if err != nil || !ok {
						if err == nil {
							timeouts.Add(1)
							// The transaction is still usable after
							// a timed-out wait.
							_, err = tx.Exec(ctx(t), `SELECT 1`)
						}
						return false, err
					}
					if inside.Add(1) != 1 {
						overlaps.Add(1)
					}
					var n int
					if err := tx.QueryRow(ctx(t), `SELECT n FROM `+table+` WHERE id = 1`).Scan(&n); err != nil {
						return false, err
					}
					time.Sleep(time.Millisecond)
					inside.Add(-1)
					if _, err := tx.Exec(ctx(t), `UPDATE `+table+` SET n = $1 WHERE id = 1`, n+1); err != nil {
						return false, err
					}
					return true, tx.Commit(ctx(t))
				}()
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				if done {
					r++
				}
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT n FROM `+table+` WHERE id = 1`).Scan(&n))
	t.Logf("%d clients x %d rounds through PgBouncer (transaction mode, 20 server connections) in %v; %d waits timed out and were retried",
		clients, rounds, time.Since(began).Round(time.Millisecond), timeouts.Load())
	require.Zero(t, overlaps.Load(), "two clients inside at once")
	require.Equal(t, clients*rounds, n, "no update lost")
}

// Through PgBouncer in transaction mode, NoWait and Timeout behave as on a
// direct connection, and a Coordinator connected directly and transactions
// through the proxy exclude each other, both ways.
func TestAcquireTxPgBouncerAgainstCoordinator(t *testing.T) {
	t.Parallel()
	pool := bouncerPool(t, 4)
	p := testPrefix(t)
	c := newCoord(t, p)
	begin := func() pgx.Tx {
		tx, err := pool.Begin(ctx(t))
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		return tx
	}

	l := c.GetLock("vol")
	mustAcquire(t, l, NoWait)
	tx := begin()
	require.False(t, mustTryTx(t, tx, p, "vol", NoWait), "the coordinator's session lock excludes a transaction through the proxy")
	start := time.Now()
	require.False(t, mustTryTx(t, tx, p, "vol", Timeout(300*time.Millisecond)))
	require.GreaterOrEqual(t, time.Since(start), 290*time.Millisecond)
	requireUsable(t, tx)
	got := make(chan error, 1)
	go func() {
		ok, err := AcquireTx(ctx(t), tx, p, "vol", Timeout(time.Minute))
		if err == nil && !ok {
			err = errors.New("timed out")
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return serverWaiters(t, l.Key()) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, l.Release(ctx(t)))
	require.NoError(t, <-got, "acquired through the proxy as soon as the coordinator released")

	requireBusy(t, c.GetLock("vol"))
	ok, err := c.GetLock("vol").AcquireShared(ctx(t), NoWait)
	require.NoError(t, err)
	require.False(t, ok)
	tx2 := begin()
	require.False(t, mustTryTx(t, tx2, p, "vol", NoWait), "two transactions through the proxy exclude each other")
	require.NoError(t, tx.Commit(ctx(t)))
	require.True(t, mustTryTx(t, tx2, p, "vol", NoWait))
	require.NoError(t, tx2.Rollback(ctx(t)))
	l = c.GetLock("vol")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
}
