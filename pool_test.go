package pgcoord

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// Config.Pool lends its connect hooks: here BeforeConnect is what makes a
// connection work at all (it fixes the database name, as an IAM-token hook
// sets the password), so Start, its migrations and every session went
// through it. The coordinator's application_name wins over the hook's, so
// held_locks still finds the member.
func TestPoolConnectHooks(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	pcfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	realDB := pcfg.ConnConfig.Database
	pcfg.ConnConfig.Database = "pgcoord_no_such_db"
	var before, after atomic.Int64
	pcfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		before.Add(1)
		cc.Database = realDB
		cc.RuntimeParams["application_name"] = "app-hook"
		return nil
	}
	pcfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		after.Add(1)
		_, err := conn.Exec(ctx, "SELECT 1")
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx(t), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	c, err := New(Config{Pool: pool, Prefix: testPrefix(t), Logger: quietLogger()}) // migrates: an empty database
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	require.GreaterOrEqual(t, before.Load(), int64(3), "migration, control and lock sessions")
	require.Equal(t, before.Load(), after.Load())

	l := c.GetLock("hooked")
	mustAcquire(t, l, NoWait)
	conn := connect(t, dbURL)
	var member string
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT member_id FROM pgcoord.held_locks WHERE key = $1`, l.Key()).Scan(&member))
	require.Equal(t, c.MemberID(), member)
	require.NoError(t, l.Release(ctx(t)))
	require.Zero(t, pool.Stat().TotalConns(), "pgcoord never borrowed a pooled connection")
}

// A failing hook fails Start with its error.
func TestPoolConnectHookFails(t *testing.T) {
	t.Parallel()
	pcfg, err := pgxpool.ParseConfig(testURL)
	require.NoError(t, err)
	pcfg.AfterConnect = func(context.Context, *pgx.Conn) error { return context.DeadlineExceeded }
	pool, err := pgxpool.NewWithConfig(ctx(t), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	c, err := New(Config{Pool: pool, SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "the pool's AfterConnect")
}

// The pool's MaxConns does not bound the coordinator's sessions: with the
// pool's only connection taken by the app, the coordinator still starts,
// holds locks and waits for one.
func TestPoolMaxConnsDoesNotBound(t *testing.T) {
	t.Parallel()
	pcfg, err := pgxpool.ParseConfig(testURL)
	require.NoError(t, err)
	pcfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx(t), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	taken, err := pool.Acquire(ctx(t))
	require.NoError(t, err)
	defer taken.Release()

	prefix := testPrefix(t)
	c := newCoord(t, prefix, func(cfg *Config) { cfg.ConnString, cfg.Pool = "", pool })
	other := newCoord(t, prefix)
	for _, name := range []string{"a", "b", "c"} {
		mustAcquire(t, c.GetLock(name), NoWait)
	}
	held := other.GetLock("contended")
	mustAcquire(t, held, NoWait)
	acquireAfterWait(t, c.GetLock("contended"), held)
	require.EqualValues(t, 1, pool.Stat().TotalConns())
}

func TestMigratePool(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, MigratePool(ctx(t), nil), ErrInvalidConfig)

	dbURL := freshDatabase(t)
	pool, err := pgxpool.New(ctx(t), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, MigratePool(ctx(t), pool))
	require.NoError(t, MigratePool(ctx(t), pool), "a second run is a no-op")

	var version int64
	var dirty bool
	require.NoError(t, pool.QueryRow(ctx(t), `SELECT version, dirty FROM pgcoord.schema_migrations`).Scan(&version, &dirty))
	require.EqualValues(t, schemaVersion, version)
	require.False(t, dirty)
	var advisory int
	require.NoError(t, pool.QueryRow(ctx(t), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&advisory))
	require.Zero(t, advisory, "golang-migrate's lock is not left on a pooled connection")

	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = dbURL })
	mustAcquire(t, c.GetLock("after-migrate-pool"), NoWait)
}
