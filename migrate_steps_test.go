package pgcoord

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// From every version the repo ships, not only released ones (a database
// migrated by a build of main may be at any), Migrate reaches the schema
// of a fresh migration (catalogDump).
func TestUpgradeFromEveryVersion(t *testing.T) {
	t.Parallel()
	fresh := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), fresh))
	want := catalogDump(t, connect(t, fresh))
	vs := MigrationVersions()
	for _, v := range vs[:len(vs)-1] {
		dbURL := freshDatabase(t)
		cc, err := pgx.ParseConfig(dbURL)
		require.NoError(t, err)
		require.NoError(t, ensureSchema(ctx(t), connTarget(cc, connHooks{})))
		m, closeM, err := newMigrator(cc)
		require.NoError(t, err)
		require.NoError(t, m.Migrate(uint(v)))
		closeM()
		require.NoError(t, Migrate(ctx(t), dbURL))
		require.Equal(t, want, catalogDump(t, connect(t, dbURL)), "upgraded from %d", v)
	}
}
