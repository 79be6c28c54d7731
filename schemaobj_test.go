package pgcoord

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// Start checks the objects it needs, not only the schema's version: a
// schema changed by hand after migrating fails Start at once, naming each
// missing object, with or without SkipMigrations (migrating again does not
// bring them back: the version says they are there).
func TestStartNamesMissingObjects(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	_, err := connect(t, dbURL).Exec(ctx(t), `DROP VIEW pgcoord.leaders;
		DROP FUNCTION pgcoord.next_token();
		ALTER VIEW pgcoord.semaphore_holders RENAME COLUMN slot TO slot_no`)
	require.NoError(t, err)
	for _, skip := range []bool{false, true} {
		c, err := New(Config{ConnString: dbURL, SkipMigrations: skip, Logger: quietLogger()})
		require.NoError(t, err)
		err = c.Start(ctx(t))
		require.ErrorIs(t, err, ErrSchemaMissing, "SkipMigrations=%v", skip)
		require.ErrorContains(t, err, "lacks relation pgcoord.leaders, function pgcoord.next_token(), column pgcoord.semaphore_holders.slot;")
		require.ErrorContains(t, err, "run `pgcoord migrate`")
	}
}

// schemaobj's lists are the schema: every table, sequence, view (with its
// columns, in order) and function a migration makes is listed, so Start
// checks all of them and a change to the SQL surface is deliberate (the
// views' columns are also pinned by TestSQLSurfacePinned).
func TestSchemaObjectsListed(t *testing.T) {
	t.Parallel()
	conn := connect(t, testURL)
	missing, err := schemaobj.Missing(ctx(t), conn)
	require.NoError(t, err)
	require.Empty(t, missing)

	list := func(q string) []string {
		rows, err := conn.Query(ctx(t), q)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		slices.Sort(got)
		return got
	}
	tables := slices.Sorted(slices.Values(schemaobj.Tables))
	require.Equal(t, tables, list(`SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'pgcoord' AND c.relkind IN ('r', 'S') AND c.relname <> 'schema_migrations'`))
	var views []string
	for _, v := range schemaobj.Views {
		views = append(views, v.Name)
		require.Equal(t, v.Columns, viewColumns(t, conn, v.Name), "pgcoord.%s's columns", v.Name)
	}
	slices.Sort(views)
	require.Equal(t, views, list(`SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'pgcoord' AND c.relkind = 'v'`))
	funcs := slices.Sorted(slices.Values(schemaobj.Functions))
	require.Equal(t, funcs, list(`SELECT p.proname || '(' || coalesce((SELECT string_agg(format_type(a, NULL), ',' ORDER BY i)
			FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(a, i)), '') || ')'
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgcoord'`))
}
