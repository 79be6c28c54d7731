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
	"unicode"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// readmeBlock is one fenced code block of a Markdown file.
type readmeBlock struct {
	lang string
	line int // the file's line of the block's first code line
	code []string
}

// docFiles are the Markdown files whose code blocks and links the tests
// check: README.md and every page of docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	require.NotEmpty(t, pages)
	return append([]string{"README.md"}, pages...)
}

func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
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
	require.Nil(t, cur, "%s ends inside a code block", path)
	return blocks
}

// readmeEnv declares what the README's Go blocks use without declaring it:
// the names a reader has in scope where such code would go.
const readmeEnv = `package readme

import (
	"context"
	"errors"

	"github.com/pgcoord/pgcoord"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	ctx     = context.Background()
	c       *pgcoord.Coordinator
	appPool *pgxpool.Pool
	pool    *pgxpool.Pool
	vol     = &Volume{ID: "7"}
	data    []byte
	store   Store
	m       = &Manager{}
	errBusy = errors.New("busy")
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

// TestReadmeGoBlocks compiles every ```go block of README.md and of the
// pages of docs/, so that code pasted from them compiles. The convention,
// for their authors:
//   - a block whose info string is more than "go" (```go nocompile, for a
//     list of signatures) is not compiled; every other ```go block is;
//   - a block that starts with "package" is a whole file, compiled as is;
//   - otherwise a leading `import "..."` line is only for the reader (the
//     test imports what the block uses, from readmeImports), declarations
//     that start at column 0 with "type " or "func " (up to their closing
//     brace) go to file level, and every other line is the body of a
//     function returning error (a `return nil` is added unless the block
//     ends with a return), in which readmeEnv's names (ctx, c, vol, store,
//     data, m, appPool, pool, errBusy, deleteVolume, Volume, Manager) are
//     in scope.
//
// The blocks of one file are compiled together in one package under the
// module (a block that uses pgcoordprom or pgcoordotel: under that nested
// module), with //line directives, so an error points at the file's line.
func TestReadmeGoBlocks(t *testing.T) {
	t.Parallel()
	type unit struct{ decls, bodies strings.Builder }
	type unitKey struct{ file, mod string }
	units := map[unitKey]*unit{}
	mods := map[string]bool{}
	n := 0
	readmeN := 0
	for _, file := range docFiles(t) {
		for _, b := range readmeBlocks(t, file) {
			if b.lang != "go" {
				continue
			}
			n++
			if file == "README.md" {
				readmeN++
			}
			if len(b.code) > 0 && strings.HasPrefix(b.code[0], "package ") {
				t.Fatalf("%s:%d: whole-file blocks are not supported by this test yet", file, b.line)
			}
			mod := "."
			for pkg, dir := range readmeModules {
				if strings.Contains(strings.Join(b.code, "\n"), pkg+".") {
					mod = dir
				}
			}
			mods[mod] = true
			u := units[unitKey{file, mod}]
			if u == nil {
				u = &unit{}
				units[unitKey{file, mod}] = u
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
					fmt.Fprintf(&u.decls, "\n//line %s:%d\n", file, lineNo)
				}
				if inDecl {
					u.decls.WriteString(line + "\n")
					depth += strings.Count(line, "{") - strings.Count(line, "}")
					if depth == 0 {
						inDecl = false
					}
					continue
				}
				fmt.Fprintf(&u.bodies, "//line %s:%d\n%s\n", file, lineNo, line)
				if strings.TrimSpace(line) != "" {
					last = strings.TrimSpace(line)
				}
			}
			if !strings.HasPrefix(last, "return ") {
				u.bodies.WriteString("return nil\n")
			}
			u.bodies.WriteString("}\n")
		}
	}
	require.GreaterOrEqual(t, readmeN, 4, "README.md's Go blocks")
	for k, u := range units {
		compileReadmeUnit(t, k.mod, u.decls.String()+u.bodies.String())
	}
	require.Contains(t, mods, "metrics/prom", "the Prometheus example is compiled")
	require.Contains(t, mods, "metrics/otel", "the OpenTelemetry example is compiled")
}

// compileReadmeUnit writes code, with its imports and readmeEnv, into a
// temporary package of the module in dir, and runs go vet on it.
func compileReadmeUnit(t *testing.T, dir, code string) {
	t.Helper()
	src := "package readme\n" + code
	f, err := parser.ParseFile(token.NewFileSet(), "blocks.go", src, parser.SkipObjectResolution)
	require.NoError(t, err, "Go blocks do not parse:\n%s", src)
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
	if dir != "." {
		// A nested module requires the library's release, which go.work
		// points at this tree (make test runs the library's own tests with
		// GOWORK=off: docs/releasing.md).
		work, err := filepath.Abs("go.work")
		require.NoError(t, err)
		cmd.Env = append(os.Environ(), "GOWORK="+work)
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "Go blocks do not compile in %s (go vet):\n%s\ngenerated:\n%s", dir, out, src)
}

// The SQL of README.md and docs/ shows keys that belong to the names
// beside them.
func TestReadmeSQLKeys(t *testing.T) {
	t.Parallel()
	nameRe := regexp.MustCompile(`lock_key\('([^']+)'\)`)
	keyRe := regexp.MustCompile(`key = (-?\d+)`)
	checked := 0
	for _, file := range docFiles(t) {
		for _, b := range readmeBlocks(t, file) {
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
				require.NotNil(t, nm, "%s:%d: a literal key without the name it belongs to", file, b.line+i)
				key, err := strconv.ParseInt(k[1], 10, 64)
				require.NoError(t, err)
				require.Equal(t, hash.Key(nm[1]), key, "%s:%d: key of %q", file, b.line+i, nm[1])
				checked++
			}
		}
	}
	require.Positive(t, checked)
}

// Every relative link of README.md and docs/ leads to a file that exists,
// and every #anchor to a heading of that file (GitHub's anchors: the
// heading in lower case, spaces as hyphens, other punctuation dropped), so
// moving a section cannot leave a dead link behind.
func TestReadmeLinks(t *testing.T) {
	t.Parallel()
	linkRe := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := map[string]bool{}
		seen := map[string]int{}
		inCode := false
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "```") {
				inCode = !inCode
			}
			if inCode || !strings.HasPrefix(line, "#") {
				continue
			}
			slug := headingAnchor(strings.TrimLeft(line, "#"))
			if k := seen[slug]; k > 0 {
				a[fmt.Sprintf("%s-%d", slug, k)] = true
			} else {
				a[slug] = true
			}
			seen[slug]++
		}
		anchors[path] = a
		return a
	}
	checked := 0
	for _, file := range docFiles(t) {
		raw, err := os.ReadFile(file)
		require.NoError(t, err)
		inCode := false
		for i, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "```") {
				inCode = !inCode
			}
			if inCode {
				continue
			}
			for _, m := range linkRe.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, anchor, _ := strings.Cut(target, "#")
				if path == "" {
					path = file
				} else {
					path = filepath.Join(filepath.Dir(file), path)
				}
				_, err := os.Stat(path)
				require.NoError(t, err, "%s:%d: link to %s", file, i+1, target)
				if anchor != "" {
					require.True(t, strings.HasSuffix(path, ".md"), "%s:%d: anchor into a non-Markdown file: %s", file, i+1, target)
					require.True(t, anchorsOf(path)[anchor], "%s:%d: no heading with anchor #%s in %s", file, i+1, anchor, path)
				}
				checked++
			}
		}
	}
	require.Greater(t, checked, 20)
}

// headingAnchor is GitHub's anchor of a Markdown heading's text.
func headingAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// The SELECTs on pgcoord's schema in the SQL blocks of README.md and docs/
// are valid against the schema as migrated (each is EXPLAINed, not run):
// a renamed view column fails here until the docs follow. Statements with
// parameters ($1) or on the reader's own tables are left out.
func TestReadmeSQLValid(t *testing.T) {
	t.Parallel()
	checked := 0
	check := func(file string, line int, stmt string) {
		stmt = strings.TrimSuffix(strings.TrimSpace(stmt), ";")
		if !strings.HasPrefix(strings.ToUpper(stmt), "SELECT") || strings.Contains(stmt, "$") || !strings.Contains(stmt, "pgcoord.") {
			return
		}
		_, err := testPool.Exec(ctx(t), "EXPLAIN "+stmt)
		require.NoError(t, err, "%s:%d: %s", file, line, stmt)
		checked++
	}
	for _, file := range docFiles(t) {
		for _, b := range readmeBlocks(t, file) {
			if b.lang != "sql" {
				continue
			}
			var stmt strings.Builder
			start := 0
			for i, line := range b.code {
				code, _, _ := strings.Cut(line, "--")
				if strings.TrimSpace(code) == "" {
					continue
				}
				if stmt.Len() == 0 {
					start = b.line + i
				}
				stmt.WriteString(code + "\n")
				if strings.HasSuffix(strings.TrimSpace(code), ";") {
					check(file, start, stmt.String())
					stmt.Reset()
				}
			}
			if stmt.Len() > 0 {
				check(file, start, stmt.String())
			}
		}
	}
	require.GreaterOrEqual(t, checked, 10)
}
