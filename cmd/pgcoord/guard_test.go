package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

// groupGoneArg makes the test binary, run as a guarded command, exit 0 when
// no process of the process group given as the next argument is running,
// and exitGroupAlive when one is: the command of a second "pgcoord run" or
// "elect" that must never overlap the first one's.
const groupGoneArg = "__test_group_gone"

const exitGroupAlive = 9

func checkGroupGone(pgid string) int {
	g, err := strconv.Atoi(pgid)
	if err != nil {
		return exitUsage
	}
	if live := groupPids(g); len(live) > 0 {
		fmt.Fprintf(os.Stderr, "processes of group %d still running: %v\n", g, live)
		return exitGroupAlive
	}
	return exitOK
}

// groupPids lists the processes of process group pgid that have not ended
// (zombies have: they run nothing and hold nothing), from /proc.
func groupPids(pgid int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	_ = d.Close()
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + n + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid pgrp ...
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// startGuardedGroup starts pgcoord with args (run or elect) and the command
// sh -c 'sleep 100 & sleep 100': a shell, a background grandchild and a
// foreground one. It returns the group's id once all three run; the group
// is killed at the end of the test whatever happens.
func startGuardedGroup(t *testing.T, args ...string) (*cliProc, int) {
	t.Helper()
	return startGuardedGroupWith(t, nil, args...)
}

// startGuardedGroupWith is startGuardedGroup with pgcoord readied by prep.
func startGuardedGroupWith(t *testing.T, prep func(*exec.Cmd), args ...string) (*cliProc, int) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	args = append(args, "--", "sh", "-c", `echo $$ > "$0"; sleep 100 & sleep 100`, pidFile)
	p := startCLIWith(t, false, nil, prep, args...)
	pgid, err := strconv.Atoi(waitForFile(t, p, pidFile))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	require.Eventually(t, func() bool { return len(groupPids(pgid)) == 3 }, 20*time.Second, 10*time.Millisecond,
		"sh and its two sleeps should run")
	return p, pgid
}

// waitGroupGone waits until no process of pgid runs and returns when that
// was first seen.
func waitGroupGone(t *testing.T, pgid int, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if len(groupPids(pgid)) == 0 {
			return time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("processes of group %d still running %v after %v: %v", pgid, within, within, groupPids(pgid))
	return time.Time{}
}

// killedGroupBound is how soon after pgcoord is killed every process of
// its command must be gone: the watchdog reads EOF on its pipe at once and
// sends SIGKILL; the slack is for a loaded machine (measured: see the log).
const killedGroupBound = 2 * time.Second

// kill -9 of pgcoord: the watchdog kills the command's whole group at once
// (on main the shell and both sleeps ran on, re-parented to PID 1), and a
// second run --nowait on the lock gets it only once they are gone.
func TestRunDiesWithPgcoord(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	p, pgid := startGuardedGroup(t, "run", "--prefix", prefix, "--lock", "job")

	killed := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	gone := waitGroupGone(t, pgid, 30*time.Second)
	t.Logf("every process of the command gone %v after kill -9 of pgcoord", gone.Sub(killed).Round(time.Millisecond))
	require.Less(t, gone.Sub(killed), killedGroupBound)

	exe, err := os.Executable()
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--nowait", "--", exe, groupGoneArg, strconv.Itoa(pgid))
		if r.code == exitOK {
			break
		}
		require.Equal(t, exitBusy, r.code, "the second run must not overlap the first one's command: %s", r.stderr)
		require.True(t, time.Now().Before(deadline), "the lock was not freed after pgcoord was killed")
		time.Sleep(50 * time.Millisecond)
	}
}

// The same for elect: a second elect becomes leader only once the first
// one's command group is gone.
func TestElectDiesWithPgcoord(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	p, pgid := startGuardedGroup(t, "elect", "job", "--prefix", prefix)

	killed := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	gone := waitGroupGone(t, pgid, 30*time.Second)
	t.Logf("every process of the command gone %v after kill -9 of pgcoord", gone.Sub(killed).Round(time.Millisecond))
	require.Less(t, gone.Sub(killed), killedGroupBound)

	exe, err := os.Executable()
	require.NoError(t, err)
	r := runCLI(t, "elect", "job", "--prefix", prefix, "--timeout", "30s", "--", exe, groupGoneArg, strconv.Itoa(pgid))
	require.Equal(t, exitOK, r.code, "the second leader must not overlap the first one's command: %s", r.stderr)
}

// frozenCase freezes pgcoord alone (SIGSTOP; its watchdog and the command
// run on) and has another member take over with take, which returns once
// it holds the lock or leads: the command's group must be gone before, and
// within pgcoord's lease (3s with the default 1s heartbeat). Resumed,
// pgcoord exits 75.
func frozenCase(t *testing.T, tool string, take func(ctx context.Context) error, args ...string) {
	frozenCaseBy(t, syscall.SIGSTOP, tool, take, args...)
}

// frozenCaseBy is frozenCase with pgcoord frozen by sig. SIGTSTP goes to
// pgcoord's whole process group, as a terminal's ^Z goes to its foreground
// group, which pgcoord and its watchdog share (the command has a group of
// its own): pgcoord runs in a group of its own here, whose parent (the
// test) is in another group of the session, so the kernel does not discard
// a stop signal as it does for an orphaned group.
func frozenCaseBy(t *testing.T, sig syscall.Signal, tool string, take func(ctx context.Context) error, args ...string) {
	var prep func(*exec.Cmd)
	if sig == syscall.SIGTSTP {
		prep = func(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }
	}
	p, pgid := startGuardedGroupWith(t, prep, args...)
	pid := p.cmd.Process.Pid
	target := pid
	if sig == syscall.SIGTSTP {
		target = -pid // pgcoord's group: pgcoord and its watchdog
	}
	t.Cleanup(func() { _ = syscall.Kill(target, syscall.SIGCONT) })
	const lease = 3 * time.Second // SessionTimeout 5s less two 1s heartbeats

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	frozen := time.Now()
	require.NoError(t, syscall.Kill(target, sig))
	took := make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		err := take(ctx)
		took <- time.Now()
		errc <- err
	}()
	gone := waitGroupGone(t, pgid, 30*time.Second)
	var takenAt time.Time
	select {
	case takenAt = <-took:
		require.NoError(t, <-errc)
	case <-time.After(60 * time.Second):
		t.Fatal("the other member did not take over from a frozen pgcoord")
	}
	t.Logf("pgcoord frozen: command gone after %v, taken over by another member after %v",
		gone.Sub(frozen).Round(time.Millisecond), takenAt.Sub(frozen).Round(time.Millisecond))
	require.True(t, gone.Before(takenAt), "the command ran on after another member took over (gone %v, taken %v)",
		gone.Sub(frozen), takenAt.Sub(frozen))
	require.Less(t, gone.Sub(frozen), lease, "the command must be stopped within pgcoord's lease")

	require.NoError(t, syscall.Kill(target, syscall.SIGCONT))
	r := p.wait(t, 30*time.Second)
	require.Equal(t, exitLockLost, r.code, r.stderr)
	require.Contains(t, r.stderr, "pgcoord "+tool+": pgcoord (pid "+strconv.Itoa(pid)+") sent its watchdog no heartbeat in time")
}

func TestRunStoppedWhenPgcoordFrozen(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "taker")
	frozenCase(t, "run", func(ctx context.Context) error {
		l := c.GetLock("job")
		_, err := l.Acquire(ctx, pgcoord.Wait)
		return err
	}, "run", "--prefix", prefix, "--lock", "job")
}

// ^Z: SIGTSTP to pgcoord's process group, pgcoord and its watchdog. Before,
// it stopped both, and the command, in a group of its own, ran on after
// another member took the lock.
func TestRunStoppedWhenPgcoordSuspended(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "taker")
	frozenCaseBy(t, syscall.SIGTSTP, "run", func(ctx context.Context) error {
		l := c.GetLock("job")
		_, err := l.Acquire(ctx, pgcoord.Wait)
		return err
	}, "run", "--prefix", prefix, "--lock", "job")
}

func TestElectStoppedWhenPgcoordFrozen(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "taker")
	frozenCase(t, "elect", func(ctx context.Context) error {
		return c.Election("job").Campaign(ctx, "taker")
	}, "elect", "job", "--prefix", prefix)
}
