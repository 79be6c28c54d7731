package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// guardedExit is how a guarded command ended, every process it started
// gone.
type guardedExit struct {
	status syscall.WaitStatus
	// silent: the watchdog stopped the command because pgcoord sent it no
	// heartbeat in time (frozen or starved).
	silent bool
}

// guard is what run and elect hold while the command runs.
type guard struct {
	// valid looks at the guard now, the lease included (Lock.Lost and
	// Election.Done look at it), and reports whether it still holds.
	valid func() bool
	// lost is closed when the guard is lost.
	lost <-chan struct{}
	// lostWhy says what was lost, for the message (it may release a lost
	// hold, which costs no I/O).
	lostWhy func() string
	// heartbeat is the coordinator's HeartbeatInterval. The lease is
	// SessionTimeout less two heartbeats, so a guard found valid at t was
	// heard from the server at t - lease or later and the server cannot
	// free it before t + 2 heartbeats: the watchdog's deadline.
	heartbeat time.Duration
}

// beatTimes returns, for a beat whose clock was read at t0 (monoNow) just
// before the guard was found valid, when the watchdog sends SIGTERM and
// when SIGKILL if no further beat comes. The server can hand the guard on
// from t0 + 2 heartbeats (see guard.heartbeat); SIGKILL goes a quarter
// heartbeat before, SIGTERM half a heartbeat before that. Beats go every
// quarter heartbeat, so pgcoord may stall for a heartbeat before the
// command is told.
func beatTimes(t0 int64, heartbeat time.Duration) (termAt, killAt int64) {
	hb := int64(heartbeat)
	killAt = t0 + 2*hb - hb/4
	return killAt - hb/2, killAt
}

// runGuarded runs argv, with env added to the environment, while g holds,
// under a watchdog process (pgcoord __guard, guard_watchdog.go) that is its
// parent and kills it with everything it started when pgcoord dies, when
// pgcoord stops sending heartbeats (frozen), or, told by pgcoord, when the
// guard is lost (SIGTERM, then SIGKILL after grace). Signals pgcoord
// receives go to the command's process group.
//
// It returns how the command ended and whether the guard was lost while it
// ran; when the command was not started (a signal came first, it could not
// be executed) res is nil and code is pgcoord's exit code, and the caller
// ends its guard.
func runGuarded(a *app, tool string, argv, env []string, g guard, grace time.Duration) (res *guardedExit, lostDuring bool, code int) {
	// From here on signals go to the command instead of cancelling a.ctx.
	sigs := make(chan os.Signal, 8)
	a.setForward(func(s os.Signal) {
		select {
		case sigs <- s:
		default: // a flood of signals: the command already has plenty
		}
	})
	defer a.setForward(nil)
	if sig := a.interrupted(); sig != 0 {
		// A signal came between the grant and the handover above.
		fmt.Fprintf(a.stderr, "pgcoord %s: interrupted (%v); not running the command\n", tool, sig)
		return nil, false, exitSignalBase + int(sig)
	}

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(a.stderr, "pgcoord %s: finding pgcoord's own executable for the watchdog: %v\n", tool, err)
		return nil, false, exitCannotExec
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(a.stderr, "pgcoord %s: %v\n", tool, err)
		return nil, false, exitError
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		_, _ = ctlR.Close(), ctlW.Close()
		fmt.Fprintf(a.stderr, "pgcoord %s: %v\n", tool, err)
		return nil, false, exitError
	}
	// pgcoord is a subreaper too: should the watchdog be killed on its
	// own, what the command started is re-parented to pgcoord, not PID 1,
	// and killTree finds it wherever it moved (best effort, as in the
	// watchdog).
	_ = becomeSubreaper()
	wd := exec.Command(self, append([]string{"__guard", "--tool", tool, "--grace", grace.String(), "--"}, argv...)...)
	wd.Stdin, wd.Stdout, wd.Stderr = os.Stdin, os.Stdout, os.Stderr
	wd.Env = append(os.Environ(), env...)
	wd.ExtraFiles = []*os.File{ctlR, evW} // fds 3 and 4
	// The watchdog has a process group of its own, as the command does:
	// what kills pgcoord's group (kill -9 -PGID from a job runner,
	// timeout -s KILL, ^\ at a terminal) kills pgcoord alone, and the
	// watchdog, reading EOF, kills the command and all it started. Sharing
	// pgcoord's group, it died with it, the parent-death signal killed the
	// command's first process alone, and what that process had started ran
	// on without the guard (TestRunGroupKilledKillsCommand).
	wd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = wd.Start()
	_, _ = ctlR.Close(), evW.Close() // the watchdog's ends
	if err != nil {
		_, _ = ctlW.Close(), evR.Close()
		fmt.Fprintf(a.stderr, "pgcoord %s: starting the watchdog: %v\n", tool, err)
		return nil, false, exitCannotExec
	}
	events := make(chan guardRecord, 4)
	go readRecords(evR, events)
	defer func() {
		// Closing ctlW tells a watchdog still running that pgcoord is
		// done: it kills what is left (nothing, after evDone) and exits.
		_ = ctlW.Close()
		_ = wd.Wait()
		_ = evR.Close()
		for range events { // readRecords has ended with evR
		}
	}()

	beat := func() bool {
		t0 := monoNow() // before the look: see beatTimes
		if !g.valid() {
			return false
		}
		termAt, killAt := beatTimes(t0, g.heartbeat)
		return writeRecord(ctlW, guardRecord{op: opBeat, a: termAt, b: killAt}) == nil
	}
	if !beat() {
		fmt.Fprintf(a.stderr, "pgcoord %s: %s before the command started; not running it\n", tool, g.lostWhy())
		return nil, true, exitLockLost
	}
	ticker := time.NewTicker(max(g.heartbeat/4, time.Millisecond))
	defer ticker.Stop()

	lost := g.lost
	pgid := 0
	var pending []syscall.Signal
	forward := func(sig syscall.Signal) {
		_ = writeRecord(ctlW, guardRecord{op: opSignal, a: int64(sig)})
	}
	for {
		select {
		case <-ticker.C:
			if lost != nil {
				beat()
			}
		case s := <-sigs:
			if sig, ok := s.(syscall.Signal); ok {
				if pgid == 0 {
					pending = append(pending, sig)
				} else {
					forward(sig)
				}
			}
		case <-lost:
			lost, lostDuring = nil, true
			fmt.Fprintf(a.stderr, "pgcoord %s: %s; stopping the command\n", tool, g.lostWhy())
			_ = writeRecord(ctlW, guardRecord{op: opStop, a: int64(grace)})
		case e, ok := <-events:
			if !ok {
				// The watchdog died without a word (someone killed it):
				// the command's first process died with it (parent-death
				// signal, Linux); kill the rest, every process that left
				// the group included, before the guard is let go.
				// Before, only the group was sent SIGKILL, and a process
				// that had moved to a session of its own (setsid) ran on
				// without the lock (TestRunWatchdogKilledKillsEscapees).
				if !killTree(pgid, wd.Process.Pid, 10*time.Second) {
					fmt.Fprintf(a.stderr, "pgcoord %s: the watchdog process died; some processes of the command were still not gone after 10s\n", tool)
				}
				fmt.Fprintf(a.stderr, "pgcoord %s: the watchdog process died; the command's processes were killed\n", tool)
				return nil, lostDuring, exitError
			}
			switch e.op {
			case evStarted:
				pgid = int(e.a)
				for _, sig := range pending {
					forward(sig)
				}
				pending = nil
			case evNotStarted:
				return nil, lostDuring, int(e.a)
			case evDone:
				res := &guardedExit{status: syscall.WaitStatus(e.a), silent: e.b&flagSilent != 0}
				return res, lostDuring || res.silent, 0
			}
		}
	}
}

// guardGuarantee is what run's and elect's --help promise about the guarded
// command, what being "lock" or "leadership": one text, since both run the
// command under the same watchdog (see runGuarded).
func guardGuarantee(what string) string {
	return strings.ReplaceAll(`Guarantee: the command, and every process it starts (a pipeline, "cmd &",
grandchildren), never runs without the {what}. pgcoord does not start it
itself: a watchdog process (pgcoord re-executed as a hidden "__guard") starts
it in its own process group and is its parent. pgcoord sends the watchdog a
heartbeat every quarter --heartbeat while the {what} holds, lease included.
 - pgcoord killed (kill -9, crash, or its whole process group killed: the
   watchdog has a group of its own): its end of the pipe closes and the
   watchdog sends SIGKILL to every process of the command at once.
 - pgcoord frozen (SIGSTOP) or starved: with no heartbeat, the watchdog sends
   SIGTERM 1.25 heartbeats after the last one and SIGKILL at 1.75, before the
   server can hand the {what} on (2 heartbeats at the earliest); pgcoord then
   exits 75. A pgcoord not scheduled for about a heartbeat counts as frozen.
 - The command exits leaving processes behind: they get SIGTERM, then
   SIGKILL after --grace, before the {what} is let go.
Platforms: on Linux the watchdog is a child subreaper (PR_SET_CHILD_SUBREAPER)
and finds processes that left the group through /proc; the command's first
process also has a parent-death signal, and pgcoord, a subreaper too, kills
the others should the watchdog be killed. Other Unix systems: the same, except
that only processes still in the command's process group are reached, and
the deadlines use the wall clock. Details and measured bounds: docs/cli.md.`, "{what}", what)
}

// killTree kills what is left of the command once its watchdog (pid wd)
// died: its process group (pgid, 0 if not known), and, on Linux, every
// descendant of pgcoord but the watchdog, which with pgcoord a subreaper is
// every process the command started, whatever group or session it moved
// to. It reaps them and returns true once none is left, false if some
// still ran after bound (a process in uninterruptible sleep). Outside
// Linux it sends the group SIGKILL once and returns.
func killTree(pgid, wd int, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for {
		if pgid != 0 {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		left := false
		for _, p := range descendants(os.Getpid()) {
			if p == wd {
				continue // a zombie until runGuarded's Wait
			}
			left = true
			_ = syscall.Kill(p, syscall.SIGKILL)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p, &ws, syscall.WNOHANG, nil) // ours once re-parented
		}
		if !left {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
