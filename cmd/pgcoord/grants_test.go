package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// loginRole creates a login role with no grants, dropped at the end of the
// test, and returns its name and the test database's URL as it.
func loginRole(t *testing.T) (string, string) {
	t.Helper()
	role := fmt.Sprintf("pgcoord_cli_%d_%d", os.Getpid(), prefixSeq.Add(1))
	_, err := testPool.Exec(context.Background(), `CREATE ROLE `+role+` LOGIN PASSWORD 'cli-pw' NOSUPERUSER NOCREATEDB NOCREATEROLE`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = testPool.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = testPool.Exec(context.Background(), `DROP ROLE `+role)
	})
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "cli-pw")
	return role, u.String()
}

// grantAsScript runs docs/grants.sql with role in place of pgcoord_app (a
// cluster-wide role the root package's tests create and drop).
func grantAsScript(t *testing.T, role string) {
	t.Helper()
	b, err := os.ReadFile("../../docs/grants.sql")
	require.NoError(t, err)
	_, err = testPool.Exec(context.Background(), strings.ReplaceAll(string(b), "pgcoord_app", role))
	require.NoError(t, err)
}

// A role that may not change the schema: run and elect without
// --skip-migrations say that migrations need the owner and name the flag;
// with it (the migrations skipped), the grant missing, from
// docs/grants.sql; with the script's grants, they work and leave no member
// row. The read-only commands point at the script too.
func TestSkipMigrationsAndGrants(t *testing.T) {
	t.Parallel()
	role, roleURL := loginRole(t)
	prefix := testPrefix(t)
	run := func(args ...string) cliResult {
		return runCLI(t, append([]string{args[0], "--database-url", roleURL, "--prefix", prefix}, args[1:]...)...)
	}

	for _, cmd := range [][]string{{"run", "--lock", "job", "--"}, {"elect", "job", "--"}} {
		r := run(append(cmd, "true")...)
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stderr, `migrate: role "`+role+`" may not change schema pgcoord`)
		require.Contains(t, r.stderr, "--skip-migrations")
		require.Contains(t, r.stderr, "docs/grants.sql")
		require.NotContains(t, r.stderr, "CREATE TABLE", "not golang-migrate's message")

		r = run(append([]string{cmd[0], "--skip-migrations"}, append(cmd[1:], "true")...)...)
		require.Equal(t, exitError, r.code)
		require.NotContains(t, r.stderr, "may not change schema", "--skip-migrations skips them")
		require.Contains(t, r.stderr, `role "`+role+`" lacks a grant (server: permission denied for schema pgcoord, SQLSTATE 42501); `+
			`docs/grants.sql has it: GRANT USAGE ON SCHEMA pgcoord TO pgcoord_app`)
	}
	r := runCLI(t, "locks", "--database-url", roleURL)
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "pgcoord locks: the role lacks a grant: docs/grants.sql grants what pgcoord needs")

	grantAsScript(t, role)
	r = run("run", "--skip-migrations", "--lock", "job", "--nowait", "--", "true")
	require.Equal(t, exitOK, r.code)
	r = run("elect", "--skip-migrations", "job", "--", "true")
	require.Equal(t, exitOK, r.code)
	require.Empty(t, memberRows(t, prefix), "the role may delete its member rows")
	r = runCLI(t, "locks", "--database-url", roleURL)
	require.Equal(t, exitOK, r.code)
}
