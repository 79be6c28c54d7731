package main

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

// The first migration failing on an empty database (here an object of the
// same name left in schema pgcoord) leaves golang-migrate's table marked
// dirty at that version and none of pgcoord's tables. migrate --status
// read that as "not installed; pending: 100..108 (run 'pgcoord migrate')",
// and the read commands said "run 'pgcoord migrate' first", while migrate
// refused the dirty schema: each pointed at the other. They say it is
// dirty, as for any later migration.
func TestStatusOfDirtyFirstMigration(t *testing.T) {
	t.Parallel()
	url := freshDatabase(t)
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `CREATE SCHEMA pgcoord; CREATE TABLE pgcoord.elections (x int)`)
	require.NoError(t, err)

	r := runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitError, r.code, r.stderr)
	first := pgcoord.MigrationVersions()[0]
	var v int
	var dirty bool
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT version, dirty FROM pgcoord.schema_migrations`).Scan(&v, &dirty))
	require.Equal(t, first, v)
	require.True(t, dirty)

	r = runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "dirty: migration "+strconv.Itoa(first)+" began and did not finish")
	require.NotContains(t, r.stdout, "not installed")

	r = runCLI(t, "migrate", "--status", "--json", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	var st struct {
		Version int  `json:"version"`
		Dirty   bool `json:"dirty"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	require.Equal(t, first, st.Version)
	require.True(t, st.Dirty)

	r = runCLI(t, "locks", "--database-url", url)
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "dirty")
	require.NotContains(t, r.stderr, "not found")
}
