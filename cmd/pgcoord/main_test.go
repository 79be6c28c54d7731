package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// The tests run the command as a separate process, as users do, so that
// exit codes, signals and process groups are real: the test binary
// re-executes itself with cliEnv set, and then is pgcoord (built with the
// race detector when the tests are).
const cliEnv = "PGCOORD_CMD_TEST_AS_CLI"

var (
	// testURL is the test database: PGCOORD_TEST_DATABASE_URL, or a
	// throwaway server started by TestMain.
	testURL string
	// testPool is for the tests' own queries (pg_terminate_backend...).
	testPool *pgxpool.Pool
)

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == groupGoneArg {
		os.Exit(checkGroupGone(os.Args[2]))
	}
	if os.Getenv(cliEnv) == "1" {
		os.Exit(pgcoordMain(os.Args[1:]))
	}
	url, cleanup, err := pgtemp.FromEnv("PGCOORD_TEST_DATABASE_URL", pgtemp.Options{})
	if err != nil {
		// Never skip: no database is a failure, with the reason.
		fmt.Fprintln(os.Stderr, "FAIL: the pgcoord command's tests need PostgreSQL:", err)
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
	os.Exit(code)
}

// cliResult is how a pgcoord process ended.
type cliResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// cliProc is a running pgcoord process.
type cliProc struct {
	cmd            *exec.Cmd
	stdout, stderr *bytes.Buffer
	began          time.Time
}

// startCLI starts pgcoord with args and DATABASE_URL set to the test
// database (or unset when noDB).
func startCLI(t *testing.T, noDB bool, args ...string) *cliProc {
	t.Helper()
	return startCLIEnv(t, noDB, nil, args...)
}

// startCLIEnv is startCLI with extra environment variables (KEY=VALUE).
func startCLIEnv(t *testing.T, noDB bool, extraEnv []string, args ...string) *cliProc {
	t.Helper()
	return startCLIWith(t, noDB, extraEnv, nil, args...)
}

// startCLIWith is startCLIEnv with the command readied by prep before it
// starts (nil: as it is).
func startCLIWith(t *testing.T, noDB bool, extraEnv []string, prep func(*exec.Cmd), args ...string) *cliProc {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	if prep != nil {
		prep(cmd)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	// Under -race, a process exiting 0 sleeps a second first, for late race
	// reports; the tests wait for processes only after they are done.
	env = append(env, cliEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if !noDB {
		env = append(env, "DATABASE_URL="+testURL)
	}
	env = append(env, extraEnv...)
	cmd.Env = env
	p := &cliProc{cmd: cmd, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, began: time.Now()}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	// A grandchild left behind by a failing test must not hang the test on
	// the output pipes.
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return p
}

// wait waits for the process, failing the test after timeout.
func (p *cliProc) wait(t *testing.T, timeout time.Duration) cliResult {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-done
		t.Fatalf("pgcoord %v did not exit within %v\nstdout:\n%s\nstderr:\n%s",
			p.cmd.Args[1:], timeout, p.stdout, p.stderr)
	}
	r := cliResult{code: p.cmd.ProcessState.ExitCode(), stdout: p.stdout.String(),
		stderr: p.stderr.String(), took: time.Since(p.began)}
	t.Logf("pgcoord %v: exit %d in %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], r.code,
		r.took.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// runCLI runs pgcoord with args against the test database.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	return startCLI(t, false, args...).wait(t, 60*time.Second)
}

var prefixSeq atomic.Int64

// freshDatabase creates an empty database on the test server, dropped at
// the end of the test, and returns its URL.
func freshDatabase(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("pgcoord_cmdtest_%d", prefixSeq.Add(1))
	_, err := testPool.Exec(context.Background(), `CREATE DATABASE `+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = testPool.Exec(context.Background(), `DROP DATABASE `+name+` WITH (FORCE)`)
	})
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// testPrefix gives each test its own lock namespace.
func testPrefix(t *testing.T) string {
	return fmt.Sprintf("cmdtest-%s-%d/", t.Name(), prefixSeq.Add(1))
}

// newCoord starts a coordinator on the test database, stopped at the end
// of the test.
func newCoord(t *testing.T, prefix, agent string) *pgcoord.Coordinator {
	t.Helper()
	c, err := pgcoord.New(pgcoord.Config{
		ConnString:        testURL,
		Prefix:            prefix,
		AgentID:           agent,
		HeartbeatInterval: 200 * time.Millisecond,
		SkipMigrations:    true,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

// holdLock takes prefix+name with a coordinator of the test.
func holdLock(t *testing.T, c *pgcoord.Coordinator, name string) *pgcoord.Lock {
	t.Helper()
	l := c.GetLock(name)
	ok, err := l.Acquire(context.Background(), pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok, "lock %s should be free", name)
	return l
}

func TestUsage(t *testing.T) {
	t.Parallel()
	r := runCLI(t)
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "Commands:")

	r = runCLI(t, "help")
	require.Equal(t, exitOK, r.code)
	require.Equal(t, usageText, r.stdout)
	for _, c := range commands {
		if c.name != "demo-agent" && c.name != "__guard" {
			require.Contains(t, usageText, "\n  "+c.name+" ", "usage lists %s", c.name)
		}
	}
	require.NotContains(t, usageText, "demo-agent", "the demo's child command stays hidden")
	require.NotContains(t, usageText, "__guard", "so does the watchdog of run and elect")

	r = runCLI(t, "help", "run")
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stderr, "-nowait")
	require.Contains(t, r.stderr, "exits 75")

	r = runCLI(t, "frobnicate")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, `unknown command "frobnicate"`)

	r = runCLI(t, "members", "--no-such-flag")
	require.Equal(t, exitUsage, r.code)
}

func TestFmtAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                          "0.0s",
		420 * time.Millisecond:                "0.4s",
		12*time.Second + 400*time.Millisecond: "12s",
		5*time.Minute + 3*time.Second:         "5m3s",
		2*time.Hour + 5*time.Minute:           "2h5m",
		3*24*time.Hour + 4*time.Hour:          "3d4h",
	} {
		require.Equal(t, want, fmtAge(d), "fmtAge(%v)", d)
	}
}
