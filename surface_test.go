package pgcoord

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// surfaceRow is a row of a table in docs/surface.md: its first cell, names
// in backticks (several in one cell are separated by ", ").
var surfaceRow = regexp.MustCompile("^\\| `([^|]+)` \\|")

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

// The log keys are pinned too: every key a log record of the package uses
// (a string key, or slog.X("key", ...)) is in docs/surface.md's table, and
// the table lists no key the code does not use.
func TestLogKeysPinned(t *testing.T) {
	t.Parallel()
	used := map[string]bool{}
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "Info", "Warn", "Debug", "Error", "With":
			default:
				return true
			}
			recv, ok := sel.X.(*ast.SelectorExpr) // c.log.Info, cfg.Logger.With
			if !ok || (recv.Sel.Name != "log" && recv.Sel.Name != "Logger") {
				if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "log" {
					return true
				}
			}
			args := call.Args
			if sel.Sel.Name != "With" {
				args = args[1:] // the message
			}
			for i := 0; i < len(args); i++ {
				switch a := args[i].(type) {
				case *ast.BasicLit: // "key", value
					key, err := strconv.Unquote(a.Value)
					require.NoError(t, err)
					used[key] = true
					i++
				case *ast.CallExpr: // slog.String("key", value)
					if lit, ok := a.Args[0].(*ast.BasicLit); ok {
						key, err := strconv.Unquote(lit.Value)
						require.NoError(t, err)
						used[key] = true
					}
				}
			}
			return true
		})
	}
	require.NotEmpty(t, used)
	var documented []string
	for _, cell := range surfaceTables(t, "docs/surface.md")["Log keys"] {
		documented = append(documented, strings.Split(cell, "`, `")...)
	}
	var keys []string
	for k := range used {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, keys, documented, "the log keys the code uses and docs/surface.md's")
}
