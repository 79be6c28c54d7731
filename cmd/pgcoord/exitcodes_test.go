package main

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Without a database only demo starts a throwaway server: two "pgcoord run"
// each on a private server would both get the lock.
func TestNoDatabaseRefused(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ran")
	for _, args := range [][]string{
		{"run", "--lock", "job", "--nowait", "--", "touch", marker},
		{"migrate"},
		{"migrate", "--status"},
		{"members", "--all", "--json"},
		{"members"},
		{"locks"},
		{"prune"},
		{"elect", "job", "--", "touch", marker},
		{"leader", "job"},
		{"leader", "job", "--watch"},
	} {
		r := startCLI(t, true, args...).wait(t, 30*time.Second)
		require.Equal(t, exitNoDatabase, r.code, "%v", args)
		require.Contains(t, r.stderr, "no database: set DATABASE_URL or pass --database-url", "%v", args)
		require.NotContains(t, r.stderr, "throwaway PostgreSQL (removed", "%v must not start a server", args)
		require.Empty(t, r.stdout, "%v", args)
	}
	require.NoFileExists(t, marker, "run and elect must not run their command without a database")
}

func TestDemoStartsThrowawayDatabase(t *testing.T) {
	t.Parallel()
	r := startCLI(t, true, "demo").wait(t, 120*time.Second)
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stderr, "starting a throwaway PostgreSQL")
	require.Contains(t, r.stdout, "== 5. Summary")
}

// A server that cannot be reached is not contention (exitBusy) nor a server
// error (exitError).
func TestExitCodeUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close()) // nothing listens there now
	url := fmt.Sprintf("postgres://pgcoord@127.0.0.1:%d/pgcoord?sslmode=disable&connect_timeout=5", port)
	for _, args := range [][]string{
		{"run", "--database-url", url, "--lock", "job", "--nowait", "--", "true"},
		{"members", "--database-url", url},
		{"locks", "--database-url", url},
		{"migrate", "--database-url", url},
	} {
		r := runCLI(t, args...)
		require.Equal(t, exitUnavailable, r.code, "%v", args)
		require.Contains(t, r.stderr, "connect", "%v", args)
	}
}

// A server that answers with an error (here: no such database) is exitError.
func TestExitCodeServerError(t *testing.T) {
	t.Parallel()
	cc, err := pgx.ParseConfig(testURL)
	require.NoError(t, err)
	url := fmt.Sprintf("host=%s port=%d user=%s dbname=pgcoord_no_such_db sslmode=disable", cc.Host, cc.Port, cc.User)
	for _, args := range [][]string{
		{"run", "--database-url", url, "--lock", "job", "--nowait", "--", "true"},
		{"members", "--database-url", url},
	} {
		r := runCLI(t, args...)
		require.Equal(t, exitError, r.code, "%v", args)
		require.Contains(t, r.stderr, "pgcoord_no_such_db", "%v", args)
	}
}
