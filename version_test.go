package pgcoord

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// startServer13 starts a throwaway PostgreSQL 13 from the binaries that
// scripts/install-pg-versions.sh installs (make test runs it); without them
// the test fails and says so.
func startServer13(t *testing.T) string {
	t.Helper()
	dir, err := pgtemp.InstalledBinDir("scripts/install-pg-versions.sh", 13)
	require.NoError(t, err)
	s, err := pgtemp.Start(pgtemp.Options{BinDir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s.URL()
}

// PostgreSQL 13 is past its end of life and its pg_locks has no waitstart:
// Start, Migrate and MigratePool refuse it with ErrUnsupportedServer naming
// the minimum version, before any migration (without the check, Migrate
// failed with "column l.waitstart does not exist").
func TestRefusesServer13(t *testing.T) {
	t.Parallel()
	url := startServer13(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	isRefusal := func(what string, err error) {
		t.Helper()
		require.Truef(t, errors.Is(err, ErrUnsupportedServer), "%s on PostgreSQL 13: %v", what, err)
		require.Contains(t, err.Error(), "PostgreSQL 13.")
		require.Contains(t, err.Error(), "PostgreSQL 14 or newer")
		t.Logf("%s: %v", what, err)
	}
	isRefusal("Migrate", Migrate(ctx, url))

	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	isRefusal("MigratePool", MigratePool(ctx, pool))

	for _, skip := range []bool{false, true} {
		c, err := New(Config{ConnString: url, SkipMigrations: skip, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		isRefusal("Start", c.Start(ctx))
		require.NoError(t, c.Stop(ctx))
	}
	var schemas int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgcoord'").Scan(&schemas))
	require.Zero(t, schemas, "a refused server is left untouched")
}
