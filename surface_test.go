package pgcoord

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// surfaceRow is a row of a table in docs/surface.md: its first cell, a name
// in backticks.
var surfaceRow = regexp.MustCompile("^\\| `([^`]+)` \\|")

// surfaceTables reads docs/surface.md: for each heading, the names in the
// first column of its table, in order.
func surfaceTables(t testing.TB, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string][]string{}
	heading := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
			continue
		}
		if m := surfaceRow.FindStringSubmatch(line); m != nil {
			out[heading] = append(out[heading], m[1])
		}
	}
	return out
}

// The SQL views' columns are pinned: the database's (as migrated), the
// ones Start checks (internal/schemaobj) and the ones docs/surface.md
// explains are the same, in order, so renaming or adding a column is a
// deliberate change to all three (and the changelog).
func TestSQLSurfacePinned(t *testing.T) {
	t.Parallel()
	docs := surfaceTables(t, "docs/surface.md")
	conn := connect(t, testURL)
	var documented []string
	for heading := range docs {
		if strings.HasPrefix(heading, "pgcoord.") {
			documented = append(documented, strings.TrimPrefix(heading, "pgcoord."))
		}
	}
	var views []string
	for _, v := range schemaobj.Views {
		views = append(views, v.Name)
		db := viewColumns(t, conn, v.Name)
		require.Equal(t, db, v.Columns, "pgcoord.%s: the database's columns and internal/schemaobj's", v.Name)
		require.Equal(t, db, docs["pgcoord."+v.Name], "pgcoord.%s: the database's columns and docs/surface.md's", v.Name)
		for _, c := range db {
			require.NotContains(t, []string{"limit", "user", "order", "group", "offset"}, c, "pgcoord.%s: a reserved word needs quoting", v.Name)
		}
	}
	require.ElementsMatch(t, views, documented, "every view has its table in docs/surface.md, and only views")
}
