package pgcoord

import (
	"os"
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
