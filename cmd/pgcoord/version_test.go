package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// `pgcoord migrate` against PostgreSQL 13 (past its end of life; its
// pg_locks has no waitstart) exits with an error naming the minimum
// version, instead of "column l.waitstart does not exist" from the first
// migration. The binaries come from scripts/install-pg-versions.sh, which
// make test runs; without them the test fails and says so.
func TestMigrateRefusesServer13(t *testing.T) {
	t.Parallel()
	dir, err := pgtemp.InstalledBinDir("../../scripts/install-pg-versions.sh", 13)
	require.NoError(t, err)
	s, err := pgtemp.Start(pgtemp.Options{BinDir: dir})
	require.NoError(t, err)
	defer s.Close()

	r := runCLI(t, "migrate", "--database-url", s.URL())
	require.Equal(t, exitError, r.code)
	require.Regexp(t, `^pgcoord migrate: unsupported PostgreSQL server version: the server is PostgreSQL 13\.[0-9]+; pgcoord needs PostgreSQL 14 or newer`, r.stderr)
	require.Empty(t, r.stdout)
}
