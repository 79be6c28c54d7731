package pgcoord

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// migrateCLIVersion is the golang-migrate release whose CLI the documented
// workflow is tested with: the version go.mod pins for the library.
const migrateCLIVersion = "v4.20.1"

// migrateCLI returns golang-migrate's own CLI (with the pgx5 driver), from
// $PGCOORD_MIGRATE_CLI or ~/.cache/pgcoord/bin (make tools builds it there);
// it is built there when missing, outside the library's go.mod.
func migrateCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PGCOORD_MIGRATE_CLI"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	bin := filepath.Join(home, ".cache", "pgcoord", "bin")
	exe := filepath.Join(bin, "migrate-"+migrateCLIVersion)
	if _, err := os.Stat(exe); err == nil {
		return exe
	}
	build, err := os.MkdirTemp(bin, ".migrate-build-")
	if os.IsNotExist(err) {
		require.NoError(t, os.MkdirAll(bin, 0o755))
		build, err = os.MkdirTemp(bin, ".migrate-build-")
	}
	require.NoError(t, err)
	defer os.RemoveAll(build)
	cmd := exec.Command("go", "install", "-tags", "pgx5",
		"github.com/golang-migrate/migrate/v4/cmd/migrate@"+migrateCLIVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+build, "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building golang-migrate's CLI %s (or set PGCOORD_MIGRATE_CLI): %s", migrateCLIVersion, out)
	require.NoError(t, os.Rename(filepath.Join(build, "migrate"), exe))
	return exe
}

// psqlPath finds psql, which the workflow's first step uses.
func psqlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
	require.NotEmpty(t, matches, "psql not found (install postgresql-client)")
	return matches[len(matches)-1]
}

// The README's workflow for DBAs who migrate with golang-migrate's own CLI
// and run coordinators with SkipMigrations, from an empty database.
func TestGolangMigrateCLIWorkflow(t *testing.T) {
	t.Parallel()
	cli := migrateCLI(t)
	dbURL := freshDatabase(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.Scheme = "pgx5"
	q := u.Query()
	q.Set("x-migrations-table", `"pgcoord"."schema_migrations"`)
	q.Set("x-migrations-table-quoted", "1")
	u.RawQuery = q.Encode()
	migrateURL := u.String()
	run := func(name string, args ...string) (string, error) {
		out, err := exec.Command(name, args...).CombinedOutput()
		t.Logf("%s %s:\n%s", filepath.Base(name), strings.Join(args, " "), out)
		return string(out), err
	}

	// Without the first step golang-migrate cannot create its table.
	out, err := run(cli, "-path", "migrations", "-database", migrateURL, "up")
	require.Error(t, err)
	require.Contains(t, out, `schema "pgcoord" does not exist`)

	// 1. The schema, then 2. golang-migrate.
	_, err = run(psqlPath(t), "-v", "ON_ERROR_STOP=1", "-c", "CREATE SCHEMA IF NOT EXISTS pgcoord", dbURL)
	require.NoError(t, err)
	_, err = run(cli, "-path", "migrations", "-database", migrateURL, "up")
	require.NoError(t, err)
	out, err = run(cli, "-path", "migrations", "-database", migrateURL, "version")
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(schemaVersion), strings.TrimSpace(out))

	// 3. Coordinators with SkipMigrations find the schema complete.
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = dbURL })
	mustAcquire(t, c.GetLock("migrated-by-cli"), NoWait)
	// The library and the CLI share pgcoord.schema_migrations.
	require.NoError(t, Migrate(ctx(t), dbURL))
	out, err = run(cli, "-path", "migrations", "-database", migrateURL, "version")
	require.NoError(t, err)
	require.Equal(t, fmt.Sprint(schemaVersion), strings.TrimSpace(out))
	require.NoError(t, c.Stop(context.Background()))

	// And back down, all the way.
	_, err = run(cli, "-path", "migrations", "-database", migrateURL, "down", "-all")
	require.NoError(t, err)
	var tables int
	require.NoError(t, connect(t, dbURL).QueryRow(ctx(t),
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = 'pgcoord' AND table_name <> 'schema_migrations'`).Scan(&tables))
	require.Zero(t, tables)
}
