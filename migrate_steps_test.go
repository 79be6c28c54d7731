package pgcoord

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// From every version the repo ships, not only released ones (a database
// migrated by a build of main may be at any), Migrate reaches the schema
// of a fresh migration (catalogDump).
func TestUpgradeFromEveryVersion(t *testing.T) {
	t.Parallel()
	want := freshCatalog(t)
	vs := MigrationVersions()
	for _, v := range vs[:len(vs)-1] {
		dbURL := databaseAt(t, uint(v))
		require.NoError(t, Migrate(ctx(t), dbURL))
		require.Equal(t, want, catalogDump(t, connect(t, dbURL)), "upgraded from %d", v)
	}
}
