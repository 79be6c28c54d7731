package pgcoord

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMigrationVersions(t *testing.T) {
	t.Parallel()
	vs := MigrationVersions()
	require.NotEmpty(t, vs)
	require.Equal(t, firstReleaseVersion, vs[0], "release versions start at firstReleaseVersion")
	require.Equal(t, schemaVersion, vs[len(vs)-1], "schemaVersion is the highest migration")
	require.IsIncreasing(t, vs)
}
