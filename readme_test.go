package pgcoord

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	lang string
	line int // README line of the block's first code line
	code []string
}

func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	f, err := os.Open("README.md")
	require.NoError(t, err)
	defer f.Close()
	var blocks []readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &readmeBlock{lang: strings.TrimPrefix(line, "```"), line: n + 1}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.code = append(cur.code, line)
		}
	}
	require.NoError(t, sc.Err())
	require.Nil(t, cur, "README.md ends inside a code block")
	return blocks
}

// readmeEnv declares what the README's Go blocks use without declaring it:
// the names a reader has in scope where such code would go.
const readmeEnv = `package readme

import (
	"context"

	"github.com/pgcoord/pgcoord"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	ctx     = context.Background()
	c       *pgcoord.Coordinator
	appPool *pgxpool.Pool
	vol     = &Volume{ID: "7"}
	data    []byte
	store   Store
	m       = &Manager{}
)

type Volume struct{ ID string }

type Store interface{ Write(data []byte, token int64) error }

type Backend interface{ Delete(ctx context.Context, v *Volume) error }

type Manager struct{ backend Backend }

func deleteVolume(ctx context.Context, v *Volume) error { return nil }
`

// readmeImports are the packages a README block may use without importing
// them, by the name it uses.
var readmeImports = map[string]string{
	"pgcoord": "github.com/pgcoord/pgcoord",
	"pgxpool": "github.com/jackc/pgx/v5/pgxpool",
	"pgx":     "github.com/jackc/pgx/v5",
	"context": "context",
	"errors":  "errors",
	"fmt":     "fmt",
	"log":     "log",
	"slog":    "log/slog",
	"os":      "os",
	"time":    "time",
	"http":    "net/http",
	// Only in the nested modules (readmeModules).
	"prometheus":  "github.com/prometheus/client_golang/prometheus",
	"promhttp":    "github.com/prometheus/client_golang/prometheus/promhttp",
	"pgcoordprom": "github.com/pgcoord/pgcoord/metrics/prom",
	"otel":        "go.opentelemetry.io/otel",
	"attribute":   "go.opentelemetry.io/otel/attribute",
	"pgcoordotel": "github.com/pgcoord/pgcoord/metrics/otel",
}

// readmeModules maps a package name to the nested module a block that uses
// it is compiled in; other blocks compile in the library's module.
var readmeModules = map[string]string{
	"pgcoordprom": "metrics/prom",
	"pgcoordotel": "metrics/otel",
}

// TestReadmeGoBlocks compiles every ```go block of README.md, so that code
// pasted from it compiles. The convention, for README authors:
//   - a block that starts with "package" is a whole file, compiled as is;
//   - otherwise a leading `import "..."` line is only for the reader (the
//     test imports what the block uses, from readmeImports), declarations
//     that start at column 0 with "type " or "func " (up to their closing
//     brace) go to file level, and every other line is the body of a
//     function returning error (a `return nil` is added unless the block
//     ends with a return), in which readmeEnv's names (ctx, c, vol, store,
//     data, m, appPool, deleteVolume, Volume, Manager) are in scope.
//
// All blocks are compiled together in one package under the module (a
// block that uses pgcoordprom or pgcoordotel: under that nested module),
// with //line directives, so an error points at README.md's line.
func TestReadmeGoBlocks(t *testing.T) {
	t.Parallel()
	type unit struct{ decls, bodies strings.Builder }
	units := map[string]*unit{}
	n := 0
	for _, b := range readmeBlocks(t) {
		if b.lang != "go" {
			continue
		}
		n++
		if len(b.code) > 0 && strings.HasPrefix(b.code[0], "package ") {
			t.Fatalf("README.md:%d: whole-file blocks are not supported by this test yet", b.line)
		}
		mod := "."
		for pkg, dir := range readmeModules {
			if strings.Contains(strings.Join(b.code, "\n"), pkg+".") {
				mod = dir
			}
		}
		u := units[mod]
		if u == nil {
			u = &unit{}
			units[mod] = u
		}
		fmt.Fprintf(&u.bodies, "\nfunc readmeBlock%d() error {\n", n)
		depth := 0
		inDecl := false
		last := ""
		for i, line := range b.code {
			lineNo := b.line + i
			switch {
			case i == 0 && strings.HasPrefix(line, "import "):
				continue
			case !inDecl && (strings.HasPrefix(line, "type ") || strings.HasPrefix(line, "func ")):
				inDecl = true
				fmt.Fprintf(&u.decls, "\n//line README.md:%d\n", lineNo)
			}
			if inDecl {
				u.decls.WriteString(line + "\n")
				depth += strings.Count(line, "{") - strings.Count(line, "}")
				if depth == 0 {
					inDecl = false
				}
				continue
			}
			fmt.Fprintf(&u.bodies, "//line README.md:%d\n%s\n", lineNo, line)
			if strings.TrimSpace(line) != "" {
				last = strings.TrimSpace(line)
			}
		}
		if !strings.HasPrefix(last, "return ") {
			u.bodies.WriteString("return nil\n")
		}
		u.bodies.WriteString("}\n")
	}
	require.GreaterOrEqual(t, n, 4, "README.md's Go blocks")
	for mod, u := range units {
		compileReadmeUnit(t, mod, u.decls.String()+u.bodies.String())
	}
	require.Contains(t, units, "metrics/prom", "the Prometheus example is compiled")
	require.Contains(t, units, "metrics/otel", "the OpenTelemetry example is compiled")
}

// compileReadmeUnit writes code, with its imports and readmeEnv, into a
// temporary package of the module in dir, and runs go vet on it.
func compileReadmeUnit(t *testing.T, dir, code string) {
	t.Helper()
	src := "package readme\n" + code
	f, err := parser.ParseFile(token.NewFileSet(), "blocks.go", src, parser.SkipObjectResolution)
	require.NoError(t, err, "README Go blocks do not parse:\n%s", src)
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && readmeImports[id.Name] != "" {
				used[readmeImports[id.Name]] = true
			}
		}
		return true
	})
	var imports []string
	for p := range used {
		imports = append(imports, strconv.Quote(p))
	}
	slices.Sort(imports)
	src = "package readme\n\nimport (\n" + strings.Join(imports, "\n") + "\n)\n" + code

	// In the module, so that it imports pgcoord (and the module's own
	// dependencies) as they are.
	pkgDir, err := os.MkdirTemp(dir, ".readmecheck-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(pkgDir) })
	require.NoError(t, os.WriteFile(filepath.Join(pkgDir, "env.go"), []byte(readmeEnv), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(pkgDir, "blocks.go"), []byte(src), 0o644))
	cmd := exec.Command("go", "vet", "./"+filepath.Base(pkgDir))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "README.md's Go blocks do not compile in %s (go vet):\n%s\ngenerated:\n%s", dir, out, src)
}

// The README's SQL shows keys that belong to the names beside them.
func TestReadmeSQLKeys(t *testing.T) {
	t.Parallel()
	nameRe := regexp.MustCompile(`lock_key\('([^']+)'\)`)
	keyRe := regexp.MustCompile(`key = (-?\d+)`)
	checked := 0
	for _, b := range readmeBlocks(t) {
		if b.lang != "sql" {
			continue
		}
		for i, line := range b.code {
			k := keyRe.FindStringSubmatch(line)
			if k == nil {
				continue
			}
			// The name is given on the line or in the comment just above.
			ctxt := line
			if i > 0 {
				ctxt = b.code[i-1] + line
			}
			nm := nameRe.FindStringSubmatch(ctxt)
			require.NotNil(t, nm, "README.md:%d: a literal key without the name it belongs to", b.line+i)
			key, err := strconv.ParseInt(k[1], 10, 64)
			require.NoError(t, err)
			require.Equal(t, hash.Key(nm[1]), key, "README.md:%d: key of %q", b.line+i, nm[1])
			checked++
		}
	}
	require.Positive(t, checked)
}
