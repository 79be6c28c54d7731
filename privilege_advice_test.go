package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// A role that may not change the schema, or lacks a grant, is told what to
// do: migrations need the owner (and SkipMigrations for this role), and a
// refused statement names the grant of docs/grants.sql it lacks; not
// golang-migrate's message. The server's error stays reachable.
func TestPrivilegeErrorsNameTheGrant(t *testing.T) {
	t.Parallel()
	admin := connect(t, testURL)
	bare := fmt.Sprintf("pgcoord_bare_%d", prefixSeq.Add(1))
	_, err := admin.Exec(ctx(t), `CREATE ROLE `+bare+` LOGIN PASSWORD 'app-pw' NOSUPERUSER NOCREATEDB NOCREATEROLE`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `DROP ROLE `+bare) })
	start := func(role string, skip bool) error {
		c, err := New(Config{ConnString: withUser(t, testURL, role, "app-pw"), Prefix: testPrefix(t),
			SkipMigrations: skip, Logger: quietLogger()})
		require.NoError(t, err)
		err = c.Start(ctx(t))
		if err == nil {
			require.NoError(t, c.Stop(ctx(t)))
		}
		return err
	}
	requireDenied := func(err error) {
		t.Helper()
		var pg *pgconn.PgError
		require.True(t, errors.As(err, &pg), "the server's error is wrapped: %v", err)
		require.Equal(t, "42501", pg.Code)
		require.Contains(t, err.Error(), "docs/grants.sql")
		require.Contains(t, err.Error(), "GRANT pgcoord_app TO "+bare)
		require.NotContains(t, err.Error(), "in line 0", "not golang-migrate's message")
		require.NotContains(t, err.Error(), "CREATE TABLE")
	}

	// Migrating as a role that may not change the schema.
	err = start(bare, false)
	t.Log(err)
	requireDenied(err)
	require.Contains(t, err.Error(), `pgcoord: migrate: role "`+bare+`" may not change schema pgcoord (server: permission denied for schema pgcoord, SQLSTATE 42501)`)
	require.Contains(t, err.Error(), "--skip-migrations")
	require.Equal(t, err.Error(), withGrantAdvice(Migrate(ctx(t), withUser(t, testURL, bare, "app-pw")), bare, true).Error(),
		"Migrate says the same")

	// SkipMigrations without USAGE on the schema.
	err = start(bare, true)
	t.Log(err)
	requireDenied(err)
	require.Contains(t, err.Error(), `role "`+bare+`" lacks a grant (server: permission denied for schema pgcoord, SQLSTATE 42501); docs/grants.sql has it: GRANT USAGE ON SCHEMA pgcoord TO pgcoord_app; run docs/grants.sql`)

	// A role with every grant but those on pgcoord.members.
	role := appRole(t, "")
	_, err = admin.Exec(ctx(t), `REVOKE ALL ON pgcoord.members FROM `+role)
	require.NoError(t, err)
	bare = role
	err = start(role, true)
	t.Log(err)
	requireDenied(err)
	require.Contains(t, err.Error(), `lacks a grant (server: permission denied for table members, SQLSTATE 42501); docs/grants.sql has it: GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.members TO pgcoord_app;`)
}

// Every table and sequence a coordinator uses has its statement in
// docs/grants.sql, so a refusal on any of them names its grant.
func TestEveryTableHasItsGrant(t *testing.T) {
	t.Parallel()
	for _, tbl := range schemaobj.Tables {
		kind := "table"
		switch tbl {
		case "wait_queue_ticket_seq":
			continue // an identity column's: INSERT on wait_queue is enough
		case "fencing_token":
			kind = "sequence"
		}
		require.NotEmpty(t, missingGrant("permission denied for "+kind+" "+tbl), tbl)
	}
	for _, v := range schemaobj.Views {
		require.NotEmpty(t, missingGrant("permission denied for view "+v.Name), v.Name)
	}
	require.Equal(t, "GRANT EXECUTE ON FUNCTION pgcoord.fence_ok(bigint, bigint) TO pgcoord_app",
		missingGrant("permission denied for function fence_ok"))
	require.Empty(t, missingGrant("permission denied for table other_app_table"))
	require.Empty(t, missingGrant("keine Berechtigung für Tabelle members"))
}
