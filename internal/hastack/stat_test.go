package hastack

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// parseStat reads the servers' status out of HAProxy 2.6's "show stat"
// (testdata/show-stat.csv: a listener like the stack's, node1's check
// answered 200, node2's refused), by the header's column names. Runs
// without a stack.
func TestParseStat(t *testing.T) {
	csv, err := os.ReadFile("testdata/show-stat.csv")
	require.NoError(t, err)
	got, err := parseStat(string(csv), "primary")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"node1": "UP", "node2": "DOWN"}, got)
	got, err = parseStat(string(csv), "other")
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = parseStat("Unknown command\n", "primary")
	require.Error(t, err)
}
