package pgcoord

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// testURL is the superuser URL of the test database: PGCOORD_TEST_DATABASE_URL,
// or a throwaway server started by TestMain.
var testURL string

// testPool is a plain pgx pool for the tests' own queries (pg_locks,
// pg_terminate_backend), separate from anything the coordinators own.
var testPool *pgxpool.Pool

func TestMain(m *testing.M) {
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role))
	}
	url, cleanup, err := pgtemp.FromEnv("PGCOORD_TEST_DATABASE_URL", pgtemp.Options{})
	if err != nil {
		// Never skip: no database is a failure, with the reason.
		fmt.Fprintln(os.Stderr, "FAIL: pgcoord's tests need PostgreSQL:", err)
		os.Exit(1)
	}
	testURL = url
	os.Setenv("PGCOORD_EXAMPLE_URL", url)
	code := func() int {
		defer cleanup()
		ctx := context.Background()
		if err := Migrate(ctx, testURL); err != nil {
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

// testPrefix gives each test its own lock namespace, so tests can run in
// parallel against one database without seeing each other's locks.
func testPrefix(t testing.TB) string {
	return fmt.Sprintf("%s#%d/", t.Name(), prefixSeq.Add(1))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// keptLogger returns a debug logger whose lines are printed only if the
// test fails: a failure that needs the coordinator's side of the story
// (a reconnect that never came) shows it, and a pass stays quiet.
func keptLogger(t testing.TB) *slog.Logger {
	logs := new(lockedBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("coordinator log:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newCoord starts a coordinator on the test database with prefix and the
// default configuration (what users run: one lock session, a budget of
// MaxSessions sessions, the default heartbeat and SessionTimeout), and stops
// it when the test ends. mods set what a test is about; a test that needs
// another setting says why beside it.
func newCoord(t testing.TB, prefix string, mods ...func(*Config)) *Coordinator {
	t.Helper()
	cfg := Config{
		ConnString: testURL,
		Prefix:     prefix,
		// TestMain migrated the database once; Start checks the schema.
		SkipMigrations: true,
		Logger:         quietLogger(),
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := New(cfg)
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

func mustAcquire(t testing.TB, l *Lock, b Blocking) {
	t.Helper()
	ok, err := l.Acquire(ctx(t), b)
	require.NoError(t, err)
	require.True(t, ok, "acquire %q", l.Name())
}

// backendsOf counts c's sessions on the server, by their application_name.
func backendsOf(t testing.TB, c *Coordinator) int {
	t.Helper()
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, c.sessionTag).Scan(&n))
	return n
}

func requireBusy(t testing.TB, l *Lock) {
	t.Helper()
	ok, err := l.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.False(t, ok, "%q should be busy", l.Name())
}

// acquireAfterWait makes w take its lock by a server-side wait: it starts
// w waiting, waits until the server shows it waiting, releases holder and
// requires that w got the lock. The hold then sits on a wait session.
func acquireAfterWait(t testing.TB, w, holder *Lock) {
	t.Helper()
	res := make(chan error, 1)
	go func() {
		ok, err := w.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = fmt.Errorf("Wait returned false")
		}
		res <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, holder.Release(ctx(t)))
	require.NoError(t, <-res)
}

// waiters counts sessions waiting on the server for key.
func waiters(t testing.TB, key int64) int {
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT count(*) FROM pgcoord.held_locks WHERE key = $1 AND NOT granted`, key).Scan(&n))
	return n
}

// heldBy returns the backend pid holding key (granted), or 0.
func heldBy(t testing.TB, key int64) int32 {
	t.Helper()
	var pid int32
	err := testPool.QueryRow(ctx(t), `SELECT backend_pid FROM pgcoord.held_locks WHERE key = $1 AND granted`, key).Scan(&pid)
	if err == pgx.ErrNoRows {
		return 0
	}
	require.NoError(t, err)
	return pid
}

func requireClosedWithin(t testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
		return
	default:
	}
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not signalled within %v", what, d)
	}
}

// connect opens a plain connection for a test, closed when it ends.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// randomSuffix names per-test objects (tables, roles) uniquely.
func randomSuffix() string { return fmt.Sprintf("%d_%d", os.Getpid(), prefixSeq.Add(1)) }

// ownServer starts a throwaway server for one test, with settings, migrated,
// for tests that stop, restart, signal or starve their server. It is removed
// after the test's coordinators stopped (cleanups run last-added first).
func ownServer(t testing.TB, settings map[string]string) *pgtemp.Server {
	t.Helper()
	srv, err := pgtemp.Start(pgtemp.Options{Settings: settings})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	require.NoError(t, Migrate(ctx(t), srv.URL()))
	return srv
}
