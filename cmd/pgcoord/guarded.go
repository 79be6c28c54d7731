package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// runGuarded runs argv, with env added to the environment, while something
// pgcoord holds guards it (a lock for run, leadership for elect), and is
// what the two commands share: the signals pgcoord receives go to the
// command's process group, and when lost closes, the command is told with
// SIGTERM and, after grace, SIGKILL. lostWhy says what was lost while the
// command ran, for the message (it may release a lost hold, which costs no I/O).
//
// It returns the command's state and whether the guard was lost while it
// ran; when the command was not started (a signal came first, or it could
// not be executed) ps is nil and code is pgcoord's exit code, and the
// caller ends its guard.
func runGuarded(a *app, tool string, argv, env []string, lost <-chan struct{}, lostWhy func() string,
	grace time.Duration) (ps *os.ProcessState, lostDuring bool, code int) {
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

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(a.stderr, "pgcoord %s: %v\n", tool, err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, false, exitNotFound
		}
		return nil, false, exitCannotExec
	}
	pgid := cmd.Process.Pid // Setpgid: the group id is the child's pid
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	var killTimer <-chan time.Time
	for {
		select {
		case <-done:
			return cmd.ProcessState, lostDuring, 0
		case s := <-sigs:
			if sig, ok := s.(syscall.Signal); ok {
				_ = syscall.Kill(-pgid, sig)
			}
		case <-lost:
			lost, lostDuring = nil, true
			fmt.Fprintf(a.stderr, "pgcoord %s: %s; stopping the command\n", tool, lostWhy())
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			if grace == 0 {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			} else {
				killTimer = time.After(grace)
			}
		case <-killTimer:
			killTimer = nil
			fmt.Fprintf(a.stderr, "pgcoord %s: the command did not exit within %v of SIGTERM; sending SIGKILL\n", tool, grace)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
}
