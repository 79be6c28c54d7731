// Package chaostest holds pgcoord's fault tests that need a TCP proxy
// (Shopify's toxiproxy, in-process): the chaos suite and the cut-off test.
// It is a module of its own so that the library's go.mod, and with it the
// module graph of every importer, does not carry toxiproxy and what it
// depends on. It tests pgcoord through its exported API only.
package chaostest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// testURL is the superuser URL of the test database: PGCOORD_TEST_DATABASE_URL,
// or a throwaway server started by TestMain. (The chaos suite starts a
// server of its own, since it restarts it.)
var testURL string

// testPool is a plain pgx pool for the tests' own queries.
var testPool *pgxpool.Pool

func TestMain(m *testing.M) {
	if os.Getenv(chaosChildEnv) != "" {
		// A chaos child runs TestChaosChild only, against the parent's
		// server: no server of its own.
		os.Exit(m.Run())
	}
	url, cleanup, err := pgtemp.FromEnv("PGCOORD_TEST_DATABASE_URL", pgtemp.Options{})
	if err != nil {
		// Never skip: no database is a failure, with the reason.
		fmt.Fprintln(os.Stderr, "FAIL: pgcoord's chaos tests need PostgreSQL:", err)
		os.Exit(1)
	}
	testURL = url
	code := func() int {
		defer cleanup()
		ctx := context.Background()
		if err := pgcoord.Migrate(ctx, testURL); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: migrating the test database:", err)
			return 1
		}
		testPool, err = pgxpool.New(ctx, testURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: connecting to the test database:", err)
			return 1
		}
		defer testPool.Close()
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var prefixSeq atomic.Int64

// testPrefix gives each test its own lock namespace.
func testPrefix(t testing.TB) string {
	return fmt.Sprintf("%s#%d/", t.Name(), prefixSeq.Add(1))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newCoord starts a coordinator on the test database with prefix, and stops
// it when the test ends.
func newCoord(t testing.TB, prefix string, mods ...func(*pgcoord.Config)) *pgcoord.Coordinator {
	t.Helper()
	cfg := pgcoord.Config{
		ConnString:        testURL,
		Prefix:            prefix,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    5 * time.Second,
		SkipMigrations:    true,
		Logger:            quietLogger(),
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := pgcoord.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

// ctx returns a context that ends with the test or after a minute.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func mustAcquire(t testing.TB, l *pgcoord.Lock, b pgcoord.Blocking) {
	t.Helper()
	ok, err := l.Acquire(ctx(t), b)
	require.NoError(t, err)
	require.True(t, ok, "acquire %q", l.Name())
}

// waiters counts sessions waiting on the server for key.
func waiters(t testing.TB, key int64) int {
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT count(*) FROM pgcoord.held_locks WHERE key = $1 AND NOT granted`, key).Scan(&n))
	return n
}

// isClosed reports whether ch is closed, without blocking.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
