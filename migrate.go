package pgcoord

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrationFiles are the numbered golang-migrate files, embedded so that the
// library needs nothing on disk.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// schemaVersion is the migration version this code needs (the highest file).
const schemaVersion = 108

// firstReleaseVersion is the version of the first released migration
// (v0.1.0, which squashed the pre-release history 1..13). A schema whose
// recorded version is below it was written by a pre-release pgcoord: its
// history is not this one, and golang-migrate would only say "no migration
// found for version N". Release versions never go below it.
const firstReleaseVersion = 100

// preReleaseError is ErrPreReleaseSchema for a schema at version v, with
// what to do.
func preReleaseError(v int64) error {
	return fmt.Errorf("%w: schema pgcoord is at version %d, written by a pre-release pgcoord whose migrations "+
		"v0.1.0 replaced (release versions start at %d); stop its coordinators, DROP SCHEMA pgcoord CASCADE "+
		"and run `pgcoord migrate` (see CHANGELOG.md, v0.1.0, to keep fencing tokens increasing)",
		ErrPreReleaseSchema, v, firstReleaseVersion)
}

// isPreRelease reports whether a recorded schema version is one of the
// pre-release history's (0 or below means no version recorded).
func isPreRelease(v int64) bool { return v > 0 && v < firstReleaseVersion }

var migrationName = regexp.MustCompile(`^[0-9]{4}_[a-z0-9_]+\.(up|down)\.sql$`)

// Migrate applies pgcoord's embedded migrations to the database at
// connString: schema pgcoord, with golang-migrate's table
// pgcoord.schema_migrations, so an app's own migrations are never touched.
// Several processes may migrate at once: they take turns on an advisory lock.
// Start calls it unless Config.SkipMigrations is set. MigratePool does the
// same through an app's pool.
func Migrate(ctx context.Context, connString string) error {
	cc, err := pgx.ParseConfig(connString)
	if err != nil {
		return fmt.Errorf("%w: ConnString: %w", ErrInvalidConfig, err)
	}
	skipStandbys(cc)
	withConnectTimeout(cc)
	return migrateTo(ctx, connTarget(cc, connHooks{}), slog.Default())
}

// migrationTarget is where migrations run: one connection for creating the
// schema, and a database/sql handle for golang-migrate.
type migrationTarget struct {
	// conn returns a connection and the function that gives it back.
	conn   func(ctx context.Context) (*pgx.Conn, func(), error)
	openDB func() *sql.DB
	// user is the role migrations log in as, for advice when it lacks a
	// right ("" when unknown).
	user string
	// beforeUp, set by a test, runs just before golang-migrate's Up.
	beforeUp func()
}

// connTarget migrates over new connections from cc (with Config.Pool's
// connect hooks, when the coordinator has them).
func connTarget(cc *pgx.ConnConfig, hooks connHooks) migrationTarget {
	return migrationTarget{
		conn: func(ctx context.Context) (*pgx.Conn, func(), error) {
			conn, err := hooks.dial(ctx, cc, migrateAppName)
			if err != nil {
				return nil, nil, err
			}
			return conn, func() { _ = conn.Close(context.WithoutCancel(ctx)) }, nil
		},
		openDB: func() *sql.DB { return hooks.openDB(cc, migrateAppName) },
		user:   cc.User,
	}
}

// migrateAppName is the application_name of migration sessions.
const migrateAppName = "pgcoord-migrate"

func migrateTo(ctx context.Context, target migrationTarget, log *slog.Logger) (err error) {
	// A role that may not change the schema is told what to do instead.
	defer func() { err = withGrantAdvice(err, target.user, true) }()
	if err := checkMigrationNames(migrationFiles); err != nil {
		return err
	}
	if err := ensureSchema(ctx, target); err != nil {
		return err
	}
	if err := awaitMigrateLock(ctx, target); err != nil {
		return err
	}

	m, closeM, err := newMigratorDB(target.openDB())
	if err != nil {
		return err
	}
	defer closeM()

	// golang-migrate cannot move a pre-release history forward: say what
	// to do instead of its "no migration found for version N".
	if v, _, err := m.Version(); err == nil && isPreRelease(int64(v)) {
		return preReleaseError(int64(v))
	}
	// A schema a newer pgcoord migrated (a rolling upgrade: this process
	// is of the older release) has nothing this binary can apply, and
	// golang-migrate would fail on it with "no migration found"; the
	// schema check that follows (Start's, the CLI's) decides whether this
	// binary can use it.
	if v, dirty, err := m.Version(); err == nil && int64(v) > schemaVersion {
		if dirty {
			return fmt.Errorf("pgcoord: migrate: schema pgcoord is at version %d, marked dirty by a newer pgcoord (this one has migrations up to %d): run that pgcoord's migrate", v, schemaVersion)
		}
		log.Info("pgcoord: schema is newer than this pgcoord's migrations: nothing to migrate", slog.Uint64("version", uint64(v)))
		return nil
	}

	if target.beforeUp != nil {
		target.beforeUp()
	}
	err = upStepwise(ctx, m)
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		return ctxErr
	}
	if d := (migrate.ErrDirty{}); errors.As(err, &d) {
		return dirtyError(d)
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("pgcoord: migrate: %w", migrationFailure(m, err))
	}
	version, dirty, _ := m.Version()
	log.Debug("pgcoord: schema migrated", slog.Uint64("version", uint64(version)), slog.Bool("dirty", dirty))
	return nil
}

// upStepwise applies the pending migrations one Steps(1) at a time until
// the schema is at schemaVersion, stopping between two when ctx ends
// (golang-migrate takes no ctx). Not Up: Up reads the migrations after the
// one it runs ahead of it, each in a goroutine that writes the file into a
// pipe nobody reads once a migration fails or GracefulStop stops it, and
// those goroutines (8 for the first migration, with their buffers) stayed
// for the life of the process (TestFailedMigrationErrorIsShortAndTyped,
// under goleak). A step reads only the migration it runs.
// migrate.ErrNoChange when there was nothing to apply.
func upStepwise(ctx context.Context, m *migrate.Migrate) error {
	applied := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, dirty, err := m.Version()
		if err != nil && !errors.Is(err, migrate.ErrNilVersion) {
			return err
		}
		if err == nil && !dirty && int64(v) >= schemaVersion {
			break
		}
		if err := m.Steps(1); err != nil {
			// Another process applied the last migration between the
			// version read above and the step's own, under its lock:
			// nothing is left ("file does not exist").
			if v, dirty, verr := m.Version(); errors.Is(err, os.ErrNotExist) && verr == nil && !dirty && int64(v) >= schemaVersion {
				break
			}
			return err
		}
		applied = true
	}
	if !applied {
		return migrate.ErrNoChange
	}
	return nil
}

// migrationFailure is err, a migration the server refused, as the
// server's error and the version that failed. golang-migrate's
// database.Error prints the whole migration file (25 kB for the first
// one) and does not unwrap to the *pgconn.PgError
// (TestFailedMigrationErrorIsShortAndTyped); other errors are returned
// unchanged.
func migrationFailure(m *migrate.Migrate, err error) error {
	var dv database.Error
	var dp *database.Error
	if !errors.As(err, &dv) && !errors.As(err, &dp) {
		return err
	}
	pg := pgErrorOf(err)
	if pg == nil {
		return err
	}
	v, _, verr := m.Version()
	if verr != nil {
		return fmt.Errorf("a migration failed: %w", pg)
	}
	// golang-migrate marked v dirty before running it; the next Migrate
	// says what to do (dirtyError).
	return fmt.Errorf("migration %d failed, and nothing of it stayed (one transaction; its version is marked dirty): %w", v, pg)
}

// newMigrator returns golang-migrate over the embedded files and table
// pgcoord.schema_migrations, on new connections from cc, and the function
// that closes it. Schema pgcoord must exist (ensureSchema).
func newMigrator(cc *pgx.ConnConfig) (*migrate.Migrate, func(), error) {
	return newMigratorDB(connHooks{}.openDB(cc, migrateAppName))
}

// newMigratorDB is newMigrator over sqlDB, which its close function closes
// (closing a handle from stdlib.OpenDBFromPool leaves the pool open).
func newMigratorDB(sqlDB *sql.DB) (*migrate.Migrate, func(), error) {
	fail := func(err error) (*migrate.Migrate, func(), error) {
		sqlDB.Close()
		return nil, nil, fmt.Errorf("pgcoord: migrate: %w", err)
	}
	driver, err := pgxmigrate.WithInstance(sqlDB, &pgxmigrate.Config{
		SchemaName:      "pgcoord",
		MigrationsTable: "schema_migrations",
	})
	if err != nil {
		return fail(err)
	}
	src, err := iofs.New(migrationFiles, "migrations")
	if err != nil {
		return fail(err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		return fail(err)
	}
	// Up waits for the migration lock with no timeout of its own, as the
	// constructor above did (awaitMigrateLock bounds the wait by ctx
	// before both). golang-migrate's 15 s default gives up on the wait but
	// leaves the lock statement running: it takes the lock later, on a
	// connection that then goes back to MigratePool's pool holding it, and
	// every later migration of the database waits for it for as long as
	// that connection lives (TestMigrateLockWaitLeavesNoLock).
	m.LockTimeout = migrateLockWaitForever
	return m, func() { m.Close(); sqlDB.Close() }, nil
}

// checkMigrationNames refuses badly named files: golang-migrate would skip
// them silently and the schema would miss a step.
func checkMigrationNames(fsys fs.FS) error {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return fmt.Errorf("pgcoord: migrations: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if !migrationName.MatchString(e.Name()) {
			return fmt.Errorf("pgcoord: migrations: %q is not named NNNN_name.up.sql or NNNN_name.down.sql", e.Name())
		}
	}
	return nil
}

// MigratePool is Migrate through an app's pool: it borrows one of pool's
// connections to create the schema and one for golang-migrate (which holds
// a session advisory lock while it works and releases it before giving the
// connection back), so the pool's settings and hooks apply. The pool stays
// open.
func MigratePool(ctx context.Context, pool *pgxpool.Pool) error {
	if pool == nil {
		return fmt.Errorf("%w: MigratePool: nil pool", ErrInvalidConfig)
	}
	return migrateTo(ctx, poolTarget(pool), slog.Default())
}

// poolTarget migrates over pool's connections.
func poolTarget(pool *pgxpool.Pool) migrationTarget {
	return migrationTarget{
		conn: func(ctx context.Context) (*pgx.Conn, func(), error) {
			pc, err := pool.Acquire(ctx)
			if err != nil {
				return nil, nil, err
			}
			return pc.Conn(), pc.Release, nil
		},
		openDB: func() *sql.DB { return stdlib.OpenDBFromPool(pool) },
		user:   pool.Config().ConnConfig.User,
	}
}

// dirtyError says what to do with a schema golang-migrate marked dirty at
// version d.Version: that migration began and did not finish, and
// golang-migrate's own "Fix and force version" names a command pgcoord has
// not. Each migration file runs as one statement string, one transaction:
// a file that failed left nothing of itself, and the schema is as the
// version before it left it; only a process stopped between the file's
// commit and the clearing of the mark leaves the file applied. (Not
// wrapped: golang-migrate's types are not part of pgcoord's API.)
func dirtyError(d migrate.ErrDirty) error {
	mark := "DELETE FROM pgcoord.schema_migrations" // the first one: no version before it
	for _, v := range MigrationVersions() {
		if v < d.Version {
			mark = fmt.Sprintf("UPDATE pgcoord.schema_migrations SET version = %d, dirty = false", v)
		}
	}
	return fmt.Errorf("pgcoord: migrate: schema pgcoord is marked dirty at version %d: that migration began and did not finish. "+
		"A migration runs as one transaction, so if it failed nothing of it stayed: fix what made it fail "+
		"(the error of the run that failed), then run `%s;` and migrate again. "+
		"If instead its process was stopped after the migration committed, run "+
		"`UPDATE pgcoord.schema_migrations SET dirty = false;` (docs/cli.md, \"A dirty schema\")",
		d.Version, mark)
}

// MigrationVersions returns the versions of the embedded migrations in
// ascending order: what Migrate applies, the last one being the version
// this package needs. `pgcoord migrate --status` compares it with the
// database's version.
func MigrationVersions() []int {
	entries, _ := fs.ReadDir(migrationFiles, "migrations")
	var vs []int
	for _, e := range entries {
		if !migrationName.MatchString(e.Name()) {
			continue // checkMigrationNames reports these on Migrate
		}
		v, _ := strconv.Atoi(e.Name()[:4])
		if len(vs) == 0 || vs[len(vs)-1] != v {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}
