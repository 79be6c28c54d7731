package main

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ^\ at a terminal: SIGQUIT to the foreground process group, pgcoord's
// (the watchdog and the command have groups of their own). pgcoord dies of
// it, and the command with every process it started must die with it, as
// for kill -9 of pgcoord. Before, the watchdog shared pgcoord's group and
// died too (Go's default action), the parent-death signal killed the shell
// alone, and its two sleeps ran on without the lock.
func TestRunQuitSignalToGroupKillsCommand(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	p, pgid := startGuardedGroupWith(t, func(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} },
		"run", "--prefix", prefix, "--lock", "job")
	pid := p.cmd.Process.Pid
	quit := time.Now()
	require.NoError(t, syscall.Kill(-pid, syscall.SIGQUIT))
	r := p.wait(t, 30*time.Second)
	require.NotEqual(t, exitOK, r.code)
	gone := waitGroupGone(t, pgid, 10*time.Second)
	t.Logf("every process of the command gone %v after SIGQUIT to pgcoord's group", gone.Sub(quit).Round(time.Millisecond))
	require.Less(t, gone.Sub(quit), killedGroupBound)
}

// kill -9 of pgcoord's process group (timeout -s KILL, a job runner that
// kills the group it started) kills pgcoord alone: the watchdog, in a
// group of its own, reads EOF and kills the command and all it started.
// Before, the watchdog shared pgcoord's group and died with it, the
// parent-death signal killed the shell alone, and its two sleeps ran on
// without the lock.
func TestRunGroupKilledKillsCommand(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	p, pgid := startGuardedGroupWith(t, func(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} },
		"run", "--prefix", prefix, "--lock", "job")
	pid := p.cmd.Process.Pid
	killed := time.Now()
	require.NoError(t, syscall.Kill(-pid, syscall.SIGKILL))
	_ = p.cmd.Wait()
	gone := waitGroupGone(t, pgid, 10*time.Second)
	t.Logf("every process of the command gone %v after kill -9 of pgcoord's group", gone.Sub(killed).Round(time.Millisecond))
	require.Less(t, gone.Sub(killed), killedGroupBound)
}
