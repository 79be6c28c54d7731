package pgcoord

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// Before golang-migrate runs: the schema it keeps its table in, and a wait
// for another process's migration that ends with the caller's ctx.

// awaitMigrateLock waits under ctx until golang-migrate's migration lock
// is free, so that migrating waits for another process's migration only as
// long as ctx allows. golang-migrate waits for that lock in its
// constructor (pg_advisory_lock under context.Background), with no bound:
// Start and `pgcoord migrate` behind a migration that did not end (one
// whose DDL waits for an application's transaction, say) hung past their
// ctx and ignored SIGTERM (found by a review helper;
// TestMigrateHonoursCtxBehindAnotherMigration). The lock is released at
// once and golang-migrate takes it: a process that takes it in between is
// waited for unbounded again, a narrow window (unbounded, rather than given
// up on and leaked: see newMigratorDB).
func awaitMigrateLock(ctx context.Context, target migrationTarget) error {
	conn, release, err := target.conn(ctx)
	if err != nil {
		return fmt.Errorf("pgcoord: migrate: connecting: %w", err)
	}
	defer release()
	q := db.New()
	dbName, err := q.CurrentDatabase(ctx, conn)
	if err != nil {
		return fmt.Errorf("pgcoord: migrate: %w", err)
	}
	key, err := migrateLockKey(dbName)
	if err != nil {
		return err
	}
	if err := q.AwaitMigrateLock(ctx, conn, key); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("pgcoord: migrate: waiting for another process's migration of this database: %w", err)
	}
	return q.ReleaseMigrateLock(ctx, conn, key)
}

// migrateLockWaitForever is golang-migrate's LockTimeout: about 146
// years (see newMigratorDB).
const migrateLockWaitForever = time.Duration(math.MaxInt64)

// migrateLockKey is the key of golang-migrate's migration lock for
// database dbName: its pgx driver's, for schema pgcoord and table
// schema_migrations (see newMigratorDB).
func migrateLockKey(dbName string) (int64, error) {
	id, err := database.GenerateAdvisoryLockId(dbName, "pgcoord", "schema_migrations")
	if err != nil {
		return 0, fmt.Errorf("pgcoord: migrate: %w", err)
	}
	return strconv.ParseInt(id, 10, 64)
}

// ensureSchema creates schema pgcoord, which must exist before
// golang-migrate creates its table in it. The transaction-scoped advisory
// lock keeps processes starting together from racing on CREATE SCHEMA.
func ensureSchema(ctx context.Context, target migrationTarget) error {
	conn, release, err := target.conn(ctx)
	if err != nil {
		return fmt.Errorf("pgcoord: migrate: connecting: %w", err)
	}
	defer release()
	if err := checkServerVersion(conn); err != nil {
		return err
	}
	q := db.New()
	exists, err := q.SchemaExists(ctx, conn)
	if err != nil || exists {
		return err
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := q.MigrationLock(ctx, tx, hash.Key("pgcoord\x00create-schema")); err != nil {
			return err
		}
		if err := q.CreateSchema(ctx, tx); err != nil {
			return fmt.Errorf("pgcoord: migrate: creating schema pgcoord: %w", err)
		}
		return nil
	})
}
