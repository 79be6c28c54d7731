package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// cmdGuard is "pgcoord __guard --tool T --grace D -- CMD ARGS", the hidden
// watchdog that run and elect start between themselves and the command
// (runGuarded). It is a separate process so that it keeps working when
// pgcoord cannot: it is the command's parent (and, on Linux, the subreaper
// of everything the command starts), and it kills the whole tree
//
//   - at once, when pgcoord dies (its end of fd 3 closes: kill -9, a crash);
//   - SIGTERM then SIGKILL by the deadline pgcoord's last beat gave, when
//     beats stop coming (pgcoord frozen by SIGSTOP, or starved): the
//     deadline falls before the server can hand the lock or the
//     leadership to anyone else;
//   - SIGTERM then SIGKILL after --grace when pgcoord says the guard was
//     lost, and when the command exits leaving processes behind.
//
// It reports the command's start and, once every process is gone, its
// wait status on fd 4.
func cmdGuard(a *app, args []string) int {
	// pgcoord forwards to the command what it must get; the watchdog must
	// outlive the command, whatever signal reaches it.
	a.setForward(func(os.Signal) {})
	// The watchdog runs in a process group of its own (see runGuarded),
	// where a terminal's ^Z, ^C and ^\ do not reach it; it still catches
	// what could stop or kill it, in case it is sent them (a signal to
	// every process of a session, or the group of an older pgcoord):
	// stopped, or killed, it left the command, in a group of its own, with
	// nobody to stop it when the lease ran out
	// (TestRunStoppedWhenPgcoordSuspended,
	// TestRunQuitSignalToGroupKillsCommand). SIGTTIN and SIGTTOU come from
	// the terminal to a background group (see ttyWriter). Caught, not
	// ignored: the command, started after, gets the default actions back
	// at exec.
	stopSigs := make(chan os.Signal, 1)
	signal.Notify(stopSigs, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGQUIT)
	fs := flag.NewFlagSet("__guard", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	tool := fs.String("tool", "run", "")
	grace := fs.Duration("grace", 5*time.Second, "")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprintln(a.stderr, "pgcoord __guard: internal command of run and elect, not for direct use")
		return exitUsage
	}
	// The pipes must not leak into the command: a command holding fd 4
	// would hide the watchdog's death from pgcoord.
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	w := &watchdog{
		tool:  *tool,
		grace: *grace,
		ctl:   os.NewFile(3, "pgcoord-guard-ctl"),
		ev:    os.NewFile(4, "pgcoord-guard-ev"),
		out:   ttyWriter{w: a.stderr, sigs: stopSigs},
		ppid:  os.Getppid(),
	}
	defer w.ctl.Close()
	defer w.ev.Close()
	return w.run(fs.Args())
}

// watchdog is the state of cmdGuard.
type watchdog struct {
	tool  string
	grace time.Duration
	ctl   *os.File // records from pgcoord
	ev    *os.File // records to pgcoord
	out   io.Writer
	ppid  int

	pgid int // the command's pid and process group

	termAt, killAt int64 // from the last beat (monoNow nanoseconds)
	graceEnd       int64 // SIGKILL time of a stop begun by a loss, an exit or silence
	termSent       bool
	killSent       bool
	orphaned       bool // pgcoord died
	flags          int64

	leaderDone   bool
	leaderStatus syscall.WaitStatus
	noChildren   bool
}

const never = math.MaxInt64

func (w *watchdog) run(argv []string) int {
	if err := becomeSubreaper(); err != nil {
		fmt.Fprintf(w.out, "pgcoord %s: cannot become the subreaper of the command (%v): processes it orphans are reached only through its process group\n", w.tool, err)
	}
	msgs := make(chan guardRecord, 16)
	go readRecords(w.ctl, msgs)

	// A beat before anything runs, one still fresh: this process may have
	// taken a while to start on a loaded machine, and pgcoord may have
	// been frozen meanwhile.
	// A loss reported meanwhile (pgcoord stops beating then) means the
	// command is never started: pgcoord is told so, and exits 75. Before,
	// the stop was passed over like a stale beat, and both waited for ever
	// (TestWatchdogStopBeforeStart).
	for {
		r, ok := <-msgs
		if !ok {
			return exitOK // pgcoord died before the start
		}
		if r.op == opStop {
			fmt.Fprintf(w.out, "pgcoord %s: the guard was lost before the command started; not running it\n", w.tool)
			_ = writeRecord(w.ev, guardRecord{op: evNotStarted, a: exitLockLost})
			return exitOK
		}
		if r.op == opBeat && r.a > monoNow() {
			w.termAt, w.killAt, w.graceEnd = r.a, r.b, never
			break
		}
	}

	if code := w.start(argv); code != 0 {
		_ = writeRecord(w.ev, guardRecord{op: evNotStarted, a: int64(code)})
		return exitOK
	}
	if err := writeRecord(w.ev, guardRecord{op: evStarted, a: int64(w.pgid)}); err != nil {
		w.signalAll(syscall.SIGKILL) // pgcoord is gone
	}

	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	// Reaping is driven by SIGCHLD, and by this tick too: it also finds
	// the end of processes that are in the group but not our children
	// (outside Linux, orphans go to PID 1).
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		// Every record already sent counts before any deadline is looked
		// at: a watchdog that was not scheduled for a while must not take
		// its own delay for pgcoord's silence.
		for drained := false; !drained && msgs != nil; {
			select {
			case r, ok := <-msgs:
				if !ok {
					w.pgcoordDied()
					msgs = nil
				} else {
					w.handle(r)
				}
			default:
				drained = true
			}
		}
		w.reap()
		if w.leaderDone && !w.termSent && !w.treeEmpty() {
			w.flags |= flagLeftovers
			fmt.Fprintf(w.out, "pgcoord %s: the command exited and left processes behind; stopping them before letting go\n", w.tool)
			w.stop(w.grace)
		}
		if w.leaderDone && w.treeEmpty() {
			if !w.orphaned {
				_ = writeRecord(w.ev, guardRecord{op: evDone, a: int64(w.leaderStatus), b: w.flags})
			}
			return exitOK
		}
		now := monoNow()
		if !w.termSent && now >= w.termAt {
			w.flags |= flagSilent
			fmt.Fprintf(w.out, "pgcoord %s: pgcoord (pid %d) sent its watchdog no heartbeat in time (frozen or starved); stopping the command before pgcoord's lease can run out\n",
				w.tool, w.ppid)
			w.stop(w.grace)
		}
		if kill := w.killTime(); !w.killSent && now >= kill {
			if kill == w.graceEnd {
				fmt.Fprintf(w.out, "pgcoord %s: the command did not exit within %v of SIGTERM; sending SIGKILL\n", w.tool, w.grace)
			} else {
				fmt.Fprintf(w.out, "pgcoord %s: sending SIGKILL to the command: pgcoord's lease may run out\n", w.tool)
			}
			w.killSent = true
			w.signalAll(syscall.SIGKILL)
		}
		if w.orphaned || w.killSent {
			// A process forking while the group is killed can slip
			// through one kill; kill again until none is left.
			w.signalAll(syscall.SIGKILL)
		}
		next := w.killTime()
		if !w.termSent {
			next = min(next, w.termAt)
		}
		if w.killSent {
			next = never
		}
		if next != never {
			timer.Reset(max(time.Duration(next-monoNow()), 0))
		} else {
			timer.Stop()
		}

		select {
		case r, ok := <-msgs:
			if !ok {
				w.pgcoordDied()
				msgs = nil
				continue
			}
			w.handle(r)
		case <-chld:
		case <-tick.C:
		case <-timer.C:
		}
	}
}

// handle acts on a record from pgcoord.
func (w *watchdog) handle(r guardRecord) {
	switch r.op {
	case opBeat:
		w.termAt, w.killAt = r.a, r.b
	case opSignal:
		_ = syscall.Kill(-w.pgid, syscall.Signal(r.a))
	case opStop:
		w.stop(time.Duration(r.a))
	}
}

// start starts the command in its own process group, with the watchdog's
// stdin, stdout, stderr and environment; non-zero is pgcoord's exit code
// when it could not.
func (w *watchdog) start(argv []string) int {
	path, err := exec.LookPath(argv[0])
	if err == nil {
		var p *os.Process
		// Pdeathsig fires when the thread that forked exits, not the
		// process: start from a thread that Go keeps (unlocked, it goes
		// back to the scheduler's pool; Go does not end idle threads).
		runtime.LockOSThread()
		p, err = os.StartProcess(path, argv, &os.ProcAttr{
			Env:   os.Environ(),
			Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
			Sys:   commandAttr(),
		})
		runtime.UnlockOSThread()
		if err == nil {
			w.pgid = p.Pid
			_ = p.Release() // reaped with wait4(-1) below, with the orphans
			return 0
		}
	}
	fmt.Fprintf(w.out, "pgcoord %s: %v\n", w.tool, err)
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return exitNotFound
	}
	return exitCannotExec
}

// killTime is when SIGKILL is due: the grace's end, and never after the
// last beat's deadline. That holds after pgcoord reported a loss too: a
// loss found by pgcoord's lease (the server silent, a partition) comes
// before the server can hand the lock on, and the last beat's deadline is
// when it may; a grace past it let the command run beside the next holder
// (TestRunKilledByDeadlineAfterLoss).
func (w *watchdog) killTime() int64 {
	if w.orphaned {
		return 0
	}
	return min(w.killAt, w.graceEnd)
}

// stop sends SIGTERM (once) and sets SIGKILL grace from now at the latest.
func (w *watchdog) stop(grace time.Duration) {
	w.graceEnd = min(w.graceEnd, monoNow()+int64(grace))
	if !w.termSent {
		w.termSent = true
		w.signalAll(syscall.SIGTERM)
		// A stopped process would not act on SIGTERM before SIGKILL.
		w.signalAll(syscall.SIGCONT)
	}
}

// pgcoordDied kills every process of the command at once: pgcoord's
// sessions died with it, so the server frees the lock as soon as it reads
// the closed sockets; no grace can be given.
func (w *watchdog) pgcoordDied() {
	w.orphaned = true
	w.termSent, w.killSent = true, true
	w.signalAll(syscall.SIGKILL)
}

// signalAll sends sig to the command's process group and to every
// descendant of the watchdog (Linux), wherever it moved.
func (w *watchdog) signalAll(sig syscall.Signal) {
	_ = syscall.Kill(-w.pgid, sig)
	for _, p := range descendants(os.Getpid()) {
		_ = syscall.Kill(p, sig)
	}
}

// reap collects every child that ended, the command's status among them.
func (w *watchdog) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECHILD):
			w.noChildren = true
			return
		case err != nil || pid <= 0:
			return
		}
		if pid == w.pgid {
			w.leaderDone, w.leaderStatus = true, ws
		}
	}
}

// treeEmpty reports whether every process of the command is gone: no
// child left (with the subreaper, no descendant) and its group empty.
func (w *watchdog) treeEmpty() bool {
	return w.noChildren && errors.Is(syscall.Kill(-w.pgid, 0), syscall.ESRCH)
}

// ttyWriter writes the watchdog's messages with SIGTTOU ignored. In a
// process group of its own the watchdog is a background job of pgcoord's
// terminal, and under stty tostop a write to that terminal would send it
// SIGTTOU, which it catches: the kernel then restarts the write and sends
// the signal again, without end. With SIGTTOU ignored the kernel lets the
// write through. The command, started before any message but a refusal to
// start it, keeps the default action it got at exec.
type ttyWriter struct {
	w    io.Writer
	sigs chan<- os.Signal
}

func (t ttyWriter) Write(p []byte) (int, error) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Notify(t.sigs, syscall.SIGTTOU)
	return t.w.Write(p)
}
