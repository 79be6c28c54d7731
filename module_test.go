package pgcoord

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The library's go.mod requires only what its packages import, plus small
// test helpers: every importer gets these in its module graph. Tests that
// need heavier tools (toxiproxy for the chaos suite, etcd and Redis for the
// benchmarks, metrics clients) live in nested modules of their own.
func TestModuleIsLean(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	allowed := map[string]bool{
		"github.com/cenkalti/backoff/v4":       true,
		"github.com/golang-migrate/migrate/v4": true,
		"github.com/google/uuid":               true,
		"github.com/jackc/pgx/v5":              true,
		// goroutine ids for deadlock detection: one file per Go
		// version and no dependencies.
		"github.com/petermattis/goid": true,
		"github.com/stretchr/testify": true, // test helper
		"go.uber.org/goleak":          true, // test helper
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.Contains(line, "// indirect") || !strings.Contains(f[0], ".") {
			continue
		}
		mod := f[0]
		if f[0] == "require" {
			mod = f[1]
		}
		require.True(t, allowed[mod], "go.mod requires %s directly; keep heavy test tools in a nested module", mod)
	}
	for _, heavy := range []string{"toxiproxy", "zerolog", "prometheus", "gorilla", "protobuf", "etcd", "redis"} {
		require.NotContains(t, string(data), heavy, "go.mod's module graph carries %s", heavy)
	}
}

// releaseTag is the library's first release, the version the nested modules
// require (docs/releasing.md).
const releaseTag = "v0.1.0"

// The nested modules are published as users fetch them: each requires the
// library's release, with no replace directive, so that `go get
// github.com/pgcoord/pgcoord/metrics/prom@v0.1.0` resolves once the tags of
// docs/releasing.md exist (a replace in a dependency's go.mod is ignored, and
// a v0.0.0 requirement names a version that never exists). go.work points
// them at this tree for development.
func TestNestedModulesRequireTheRelease(t *testing.T) {
	t.Parallel()
	work, err := os.ReadFile("go.work")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^replace github\.com/pgcoord/pgcoord `+regexp.QuoteMeta(releaseTag)+` => \./$`, string(work))
	for _, m := range []string{"bench", "chaostest", "metrics/otel", "metrics/prom"} {
		require.Regexp(t, `(?m)^\s+\./`+regexp.QuoteMeta(m)+`$`, string(work), "go.work does not use %s", m)
		data, err := os.ReadFile(m + "/go.mod")
		require.NoError(t, err)
		require.NotRegexp(t, `(?m)^\s*replace\b`, string(data), "%s/go.mod has a replace directive", m)
		require.Regexp(t, `(?m)^\s*(require\s+)?github\.com/pgcoord/pgcoord `+regexp.QuoteMeta(releaseTag)+`$`, string(data),
			"%s/go.mod must require the library's release %s", m, releaseTag)
	}
}
