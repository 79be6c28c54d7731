package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// procAlive reports whether pid runs: it exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:]) // state ppid ...
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// procParent returns the parent of pid, from /proc.
func procParent(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, err := strconv.Atoi(f[1])
	require.NoError(t, err)
	return ppid
}

// The watchdog killed on its own (kill -9 of "pgcoord __guard"): pgcoord
// kills the command's group and lets the lock go, and a process that left
// the group (setsid) must be gone by then too, as docs/cli.md promises on
// Linux ("even processes that moved to another process group or
// session"). Before, it ran on, re-parented to PID 1, without the lock.
func TestRunWatchdogKilledKillsEscapees(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	dir := t.TempDir()
	shFile, escFile := filepath.Join(dir, "sh"), filepath.Join(dir, "escapee")
	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--",
		"sh", "-c", `echo $$ > "$0"; setsid sleep 100 & echo $! > "$1"; sleep 100`, shFile, escFile)
	sh, err := strconv.Atoi(waitForFile(t, p, shFile))
	require.NoError(t, err)
	escapee, err := strconv.Atoi(waitForFile(t, p, escFile))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(escapee, syscall.SIGKILL); _ = syscall.Kill(-sh, syscall.SIGKILL) })
	require.Eventually(t, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(escapee) + "/cmdline")
		return err == nil && strings.HasPrefix(string(b), "sleep\x00")
	}, 10*time.Second, 10*time.Millisecond, "setsid should have become sleep")
	watchdog := procParent(t, sh)
	require.NotEqual(t, p.cmd.Process.Pid, watchdog, "the shell's parent is the watchdog, not pgcoord")

	require.NoError(t, syscall.Kill(watchdog, syscall.SIGKILL))
	r := p.wait(t, 30*time.Second)
	require.Contains(t, r.stderr, "the watchdog process died")
	require.False(t, procAlive(escapee), "the escaped process %d runs on after pgcoord let the lock go", escapee)
	require.Empty(t, groupPids(sh), "the command's group runs on after pgcoord let the lock go")
	requireFree(t, prefix, "job")
}
