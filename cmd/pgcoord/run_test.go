package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireFree asserts that nobody holds prefix+name any more.
func requireFree(t *testing.T, prefix, name string) {
	t.Helper()
	c := newCoord(t, prefix, "checker")
	l := holdLock(t, c, name)
	require.NoError(t, l.Release(context.Background()))
}

// waitForFile waits until the command run by pgcoord wrote path, and
// returns its content.
func waitForFile(t *testing.T, p *cliProc, path string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b))
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s was not written\nstdout:\n%s\nstderr:\n%s", path, p.stdout, p.stderr)
	return ""
}

// requireGone asserts that process pid no longer exists.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}, 5*time.Second, 20*time.Millisecond, "process %d should be gone", pid)
}

func TestRunNoWaitFreeLock(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	r := runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--nowait", "--", "true")
	require.Equal(t, exitOK, r.code)
	require.Empty(t, r.stderr)
	requireFree(t, prefix, "job")
}

func TestRunBusyDoesNotRunCommand(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "holder")
	holdLock(t, c, "job")
	marker := filepath.Join(t.TempDir(), "ran")

	r := runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--nowait", "--", "touch", marker)
	require.Equal(t, exitBusy, r.code, "busy has its own exit code, not the error one")
	require.NoFileExists(t, marker, "the command must not run without the lock")
	require.Contains(t, r.stderr, `lock "`+prefix+`job" is busy (held by `+c.MemberID()+`); not running the command`)

	r = runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--timeout", "300ms", "--", "touch", marker)
	require.Equal(t, exitBusy, r.code)
	require.NoFileExists(t, marker)
	require.Contains(t, r.stderr, "is still busy after 300ms")
	require.GreaterOrEqual(t, r.took, 300*time.Millisecond)

	// Like flock -E: the busy code can be moved out of the command's range.
	r = runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--nowait", "--conflict-exit-code", "200", "--", "touch", marker)
	require.Equal(t, 200, r.code)
	require.NoFileExists(t, marker)
}

func TestRunPassesExitCodeAndLock(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	r := runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--", "sh", "-c", "exit 3")
	require.Equal(t, 3, r.code)

	// The command learns the lock's full name and a fencing token.
	r = runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--",
		"sh", "-c", `test "$PGCOORD_LOCK" = "`+prefix+`job" && test "$PGCOORD_FENCING_TOKEN" -gt 0`)
	require.Equal(t, exitOK, r.code)

	r = runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--", "sh", "-c", "kill -TERM $$")
	require.Equal(t, exitSignalBase+int(syscall.SIGTERM), r.code, "killed by a signal: 128+N")

	r = runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--", filepath.Join(t.TempDir(), "no-such-command"))
	require.Equal(t, exitNotFound, r.code)
	requireFree(t, prefix, "job")
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"run", "--", "true"},
		{"run", "--lock", "x"},
		{"run", "--lock", "x", "--nowait", "--timeout", "1s", "--", "true"},
		{"run", "--lock", "x", "--timeout", "-1s", "--", "true"},
		{"run", "--lock", "x", "--conflict-exit-code", "256", "--", "true"},
	} {
		r := runCLI(t, args...)
		require.Equal(t, exitUsage, r.code, "%v", args)
	}
}

func TestRunLostLockStopsCommand(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--heartbeat", "200ms", "--grace", "3s",
		"--", "sh", "-c", `echo $$ > "$0"; exec sleep 30`, pidFile)
	pid, err := strconv.Atoi(waitForFile(t, p, pidFile))
	require.NoError(t, err)

	// Cut the lock's session, as an administrator or a failover would.
	tag, err := testPool.Exec(context.Background(),
		"SELECT pg_terminate_backend(backend_pid) FROM pgcoord.held_locks WHERE name = $1", prefix+"job")
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())

	r := p.wait(t, 20*time.Second)
	require.Equal(t, exitLockLost, r.code)
	require.Contains(t, r.stderr, `pgcoord run: lost lock "`+prefix+`job" while the command was running`)
	require.Less(t, r.took, 15*time.Second, "sleep 30 must have been stopped")
	requireGone(t, pid)
}

func TestRunLostLockKillsAfterGrace(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell and its sleep ignore SIGTERM (an ignored signal stays
	// ignored across exec), so only SIGKILL ends them. The grace ends
	// before the last good look's deadline (1.75 heartbeats after it),
	// which bounds it (TestRunKilledByDeadlineAfterLoss).
	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--heartbeat", "1s", "--grace", "500ms",
		"--", "sh", "-c", `trap "" TERM; echo $$ > "$0"; exec sleep 30`, pidFile)
	pid, err := strconv.Atoi(waitForFile(t, p, pidFile))
	require.NoError(t, err)
	_, err = testPool.Exec(context.Background(),
		"SELECT pg_terminate_backend(backend_pid) FROM pgcoord.held_locks WHERE name = $1", prefix+"job")
	require.NoError(t, err)

	r := p.wait(t, 20*time.Second)
	require.Equal(t, exitLockLost, r.code)
	require.Contains(t, r.stderr, "did not exit within 500ms of SIGTERM; sending SIGKILL")
	require.Contains(t, r.stderr, "the command ended (killed by signal 9, killed)")
	requireGone(t, pid)
}

func TestRunForwardsSignals(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job",
		"--", "sh", "-c", `echo $$ > "$0"; exec sleep 30`, pidFile)
	pid, err := strconv.Atoi(waitForFile(t, p, pidFile))
	require.NoError(t, err)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	r := p.wait(t, 20*time.Second)
	require.Equal(t, exitSignalBase+int(syscall.SIGTERM), r.code, "the command died of the forwarded SIGTERM")
	requireGone(t, pid)
	requireFree(t, prefix, "job")

	// The member was stopped cleanly, not left stale: its row is deleted
	// only once stopped. (requireFree's "checker" member shares the prefix
	// and is still running.)
	var rows []string
	rs, err := testPool.Query(context.Background(),
		"SELECT m::text FROM pgcoord.members m WHERE prefix = $1 AND agent_id LIKE 'run-%'", prefix)
	require.NoError(t, err)
	for rs.Next() {
		var row string
		require.NoError(t, rs.Scan(&row))
		rows = append(rows, row)
	}
	require.NoError(t, rs.Err())
	require.Empty(t, rows, "run's member row is deleted when it stops")
}

func TestRunWaitsForLock(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "holder")
	l := holdLock(t, c, "job")
	marker := filepath.Join(t.TempDir(), "ran")

	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--", "sh", "-c", `echo "$PGCOORD_FENCING_TOKEN" > "$0"`, marker)
	time.Sleep(500 * time.Millisecond)
	require.NoFileExists(t, marker, "the command must wait for the lock")
	tokenBefore := l.Token()
	require.NoError(t, l.Release(context.Background()))

	r := p.wait(t, 20*time.Second)
	require.Equal(t, exitOK, r.code)
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	token, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	require.NoError(t, err)
	require.Greater(t, token, tokenBefore, "fencing tokens increase")
}

func TestRunInterruptedWhileWaiting(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "holder")
	holdLock(t, c, "job")
	marker := filepath.Join(t.TempDir(), "ran")

	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--wait", "--", "touch", marker)
	require.Eventually(t, func() bool {
		var waiting bool
		err := testPool.QueryRow(context.Background(),
			"SELECT EXISTS (SELECT 1 FROM pgcoord.held_locks WHERE name = $1 AND NOT granted)", prefix+"job").Scan(&waiting)
		return err == nil && waiting
	}, 20*time.Second, 20*time.Millisecond, "pgcoord run should wait for the lock")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))

	r := p.wait(t, 20*time.Second)
	require.Equal(t, exitSignalBase+int(syscall.SIGINT), r.code)
	require.Contains(t, r.stderr, "pgcoord run: interrupted")
	require.NoFileExists(t, marker)
}
