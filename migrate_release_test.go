package pgcoord

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// releasedSchemas are the schema versions of released pgcoord versions,
// oldest first: a database may be at any of them, and Migrate must bring
// each to the same schema as a fresh migration. A release adds one line.
var releasedSchemas = []struct {
	release string
	version uint
}{
	{"v0.1.0", 100},
}

// releasedFiles pins the migration files of released versions: a database
// that applied one never applies it again, so changing it would leave
// upgraded databases different from fresh ones. Add a new migration
// instead (and its files here once released). Until v0.1.0 is tagged its
// file may still change, with its checksum here, in the same commit.
var releasedFiles = map[string]string{
	"0100_v0_1_0.up.sql":   "df097f6c3bc39a21c0197e6dc0d36f8baac6d0be04e4c355be5f05dd1dc97868",
	"0100_v0_1_0.down.sql": "1a787993dc0b526a54d2ea1c9fd5f31df2a138ccddef637861410f8ba71fdd1e",
}

func TestReleasedMigrationsUnchanged(t *testing.T) {
	t.Parallel()
	for name, want := range releasedFiles {
		b, err := fs.ReadFile(migrationFiles, path.Join("migrations", name))
		require.NoError(t, err, "a released migration is missing")
		sum := sha256.Sum256(b)
		require.Equal(t, want, hex.EncodeToString(sum[:]),
			"%s was released: add a new migration instead of changing it", name)
	}
	for _, r := range releasedSchemas {
		require.Contains(t, MigrationVersions(), int(r.version), "%s's schema version", r.release)
	}
}

// From every released schema version, Migrate reaches the same schema as a
// fresh migration: tables, columns, defaults, constraints, indexes,
// functions, views and grants (catalogDump).
func TestUpgradeFromReleasedSchemas(t *testing.T) {
	t.Parallel()
	want := freshCatalog(t)
	for _, r := range releasedSchemas {
		t.Run(r.release, func(t *testing.T) {
			t.Parallel()
			dbURL := databaseAt(t, r.version)
			conn := connect(t, dbURL)
			var v int64
			require.NoError(t, conn.QueryRow(ctx(t), `SELECT version FROM pgcoord.schema_migrations`).Scan(&v))
			require.EqualValues(t, r.version, v)

			require.NoError(t, Migrate(ctx(t), dbURL))
			require.Equal(t, want, catalogDump(t, conn), "upgraded from %s (schema %d)", r.release, r.version)
			c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = dbURL; cfg.SkipMigrations = true })
			mustAcquire(t, c.GetLock("after-upgrade"), NoWait)
		})
	}
}

// Every down migration can run twice (IF EXISTS throughout), so a down that
// stopped part-way can be run again.
func TestMigrationDownsAreIdempotent(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	cc, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	m, closeM, err := newMigrator(cc)
	require.NoError(t, err)
	require.NoError(t, m.Down())
	closeM()

	entries, err := fs.ReadDir(migrationFiles, "migrations")
	require.NoError(t, err)
	var downs []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".down.sql") {
			downs = append(downs, e.Name())
		}
	}
	slices.Reverse(downs)
	require.NotEmpty(t, downs)
	conn := connect(t, dbURL)
	for _, name := range downs {
		b, err := fs.ReadFile(migrationFiles, path.Join("migrations", name))
		require.NoError(t, err)
		_, err = conn.Exec(ctx(t), string(b))
		require.NoError(t, err, "%s run a second time", name)
	}
}

// A schema migrated by a pre-release pgcoord (the history v0.1.0 squashed,
// versions 1..13) is refused with ErrPreReleaseSchema and what to do, by
// Migrate and by Start with or without SkipMigrations, not with
// golang-migrate's "no migration found for version 13" or a missing
// function later.
func TestPreReleaseSchemaRefused(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	_, err := connect(t, dbURL).Exec(ctx(t), `CREATE SCHEMA pgcoord;
		CREATE TABLE pgcoord.schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
		INSERT INTO pgcoord.schema_migrations VALUES (13, false);
		CREATE TABLE pgcoord.members (member_id text PRIMARY KEY)`)
	require.NoError(t, err)
	check := func(err error) {
		t.Helper()
		require.ErrorIs(t, err, ErrPreReleaseSchema)
		require.Contains(t, err.Error(), "version 13")
		require.Contains(t, err.Error(), "DROP SCHEMA pgcoord CASCADE and run `pgcoord migrate`")
		require.NotContains(t, err.Error(), "no migration found")
	}
	check(Migrate(ctx(t), dbURL))
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("SkipMigrations=%v", skip), func(t *testing.T) {
			c, err := New(Config{ConnString: dbURL, SkipMigrations: skip, Logger: quietLogger()})
			require.NoError(t, err)
			check(c.Start(ctx(t)))
		})
	}
}

// freshCatalog is the catalog (catalogDump) of a database migrated from
// nothing: what every upgrade must reach.
func freshCatalog(t *testing.T) string {
	t.Helper()
	fresh := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), fresh))
	return catalogDump(t, connect(t, fresh))
}

// databaseAt returns a new database migrated to version and no further, as
// a build that shipped that version left it.
func databaseAt(t *testing.T, version uint) string {
	t.Helper()
	dbURL := freshDatabase(t)
	cc, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	require.NoError(t, ensureSchema(ctx(t), connTarget(cc, connHooks{})))
	m, closeM, err := newMigrator(cc)
	require.NoError(t, err)
	defer closeM()
	require.NoError(t, m.Migrate(version))
	return dbURL
}
