package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// The benchmark re-executes its own binary for the processes it must be able
// to SIGKILL (lock holders) and for the etcd server, so that every server
// runs in a process of its own, as PostgreSQL and Redis do, and shares no
// garbage collector or scheduler with the client being measured.
const (
	// childModeEnv selects what a re-executed child does; unset in the
	// parent.
	childModeEnv = "PGCOORD_BENCH_CHILD"
	// childArgEnv carries the child's one argument (a URL or a data dir).
	childArgEnv = "PGCOORD_BENCH_CHILD_ARG"
	// childLockEnv names the lock a holder child takes.
	childLockEnv = "PGCOORD_BENCH_CHILD_LOCK"
	// readyTimeout bounds how long a child may take to say it is ready.
	readyTimeout = 60 * time.Second
)

// child is a running re-executed copy of this binary.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	done   chan struct{} // closed once cmd.Wait returned
}

// startChild runs this binary in mode with env (extra KEY=VALUE entries) and
// waits for its first stdout line, which must start with "ready"; it returns
// the rest of that line (an address, for the etcd child).
func startChild(ctx context.Context, mode string, env ...string) (*child, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), append([]string{childModeEnv + "=" + mode}, env...)...)
	// The child dies with us even if we are killed: nothing is left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, stderr: new(bytes.Buffer), done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s child: %w", mode, err)
	}

	// One goroutine reads the first line, drains the rest (so a chatty child
	// never blocks on a full pipe) and only then reaps the child, as os/exec
	// requires.
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(c.done)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	fail := func(err error) (*child, string, error) {
		c.kill()
		return nil, "", fmt.Errorf("%s child: %w\n%s", mode, err, strings.TrimSpace(c.stderr.String()))
	}
	select {
	case line, ok := <-first:
		if !ok || !strings.HasPrefix(line, "ready") {
			return fail(fmt.Errorf("exited or misbehaved before it was ready (first line %q)", line))
		}
		return c, strings.TrimSpace(strings.TrimPrefix(line, "ready")), nil
	case <-timer.C:
		return fail(fmt.Errorf("not ready within %s", readyTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
}

// kill SIGKILLs the child and waits until it is reaped.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// stop asks the child to exit by closing its stdin, and kills it if it has
// not within a few seconds.
func (c *child) stop() {
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.kill()
	}
}

// runChild is main for a re-executed child; it returns the exit status.
func runChild(mode string) int {
	ctx := context.Background()
	var err error
	switch mode {
	case "etcd":
		err = serveEtcd(os.Getenv(childArgEnv))
	case "etcd-nofsync":
		err = serveEtcd(os.Getenv(childArgEnv), withoutFsync)
	case "pgcoord-holder":
		err = holdPgcoord(ctx, os.Getenv(childArgEnv), os.Getenv(childLockEnv))
	case "raw-holder":
		err = holdRaw(ctx, os.Getenv(childArgEnv), os.Getenv(childLockEnv))
	default:
		err = errors.New("unknown child mode " + mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// ready tells the parent the child is ready, then blocks until the parent
// closes our stdin (or dies: Pdeathsig kills us then).
func ready(detail string) {
	fmt.Println(strings.TrimSpace("ready " + detail))
	_, _ = io.Copy(io.Discard, os.Stdin)
}
