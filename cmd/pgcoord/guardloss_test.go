package main

import (
	"context"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A loss pgcoord finds through its lease (its lock session's backend does
// not answer: frozen here, as a partition or a stalled server would be)
// stops the command by the last beat's deadline, whatever --grace says:
// that deadline is when the server may hand the lock on. Before, once
// pgcoord had reported the loss, only the grace counted, and a command
// that ignores SIGTERM ran for the whole grace, beside the next holder
// once the server ended the silent session.
func TestRunKilledByDeadlineAfterLoss(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	taker := newCoord(t, prefix, "taker")
	key := taker.GetLock("job").Key()
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--grace", "60s", "--",
		"sh", "-c", `trap "" TERM; echo $$ > "$0"; sleep 100 & sleep 100`, pidFile)
	pgid, err := strconv.Atoi(waitForFile(t, p, pidFile))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	require.Eventually(t, func() bool { return len(groupPids(pgid)) == 3 }, 20*time.Second, 10*time.Millisecond)

	var backend int32
	require.NoError(t, testPool.QueryRow(context.Background(),
		`SELECT backend_pid FROM pgcoord.held_locks WHERE key = $1 AND granted`, key).Scan(&backend))
	frozen := time.Now()
	require.NoError(t, syscall.Kill(int(backend), syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(int(backend), syscall.SIGCONT) })
	// The lease (SessionTimeout 5 s less two 1 s heartbeats) runs out 3 s
	// after the last statement heard, and the deadline is 1.75 heartbeats
	// after the last good look: the command is gone well within 10 s,
	// against the 60 s grace.
	gone := waitGroupGone(t, pgid, 10*time.Second)
	t.Logf("lock session frozen: command gone after %v", gone.Sub(frozen).Round(time.Millisecond))
	require.NoError(t, syscall.Kill(int(backend), syscall.SIGCONT))
	r := p.wait(t, 30*time.Second)
	require.Equal(t, exitLockLost, r.code, r.stderr)
}
