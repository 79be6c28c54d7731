package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// remoteAgent is an agent in a child process ("pgcoord demo-agent"), so
// that it can be killed for real: commands go to its stdin, events and
// answers come back on its stdout as JSON lines.
type remoteAgent struct {
	id    string
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	// replies carries the answers (ready, done) in order.
	replies chan agentMessage
	// exited is closed once the child has exited and been waited for.
	exited chan struct{}
	// mu serialises Do.
	mu sync.Mutex
}

func startRemoteAgent(ctx context.Context, url, id string, tl *timeline) (*remoteAgent, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding pgcoord's own binary to start %s: %w", id, err)
	}
	cmd := exec.Command(exe, "demo-agent", "--agent", id)
	// The URL goes in the environment, not the arguments, where ps would
	// show a password to every user of the machine.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C at the terminal is for the demo,
	// which then stops the child itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	r := &remoteAgent{id: id, cmd: cmd, pid: cmd.Process.Pid, stdin: stdin,
		replies: make(chan agentMessage, 16), exited: make(chan struct{})}
	go r.read(stdout, tl)

	if _, err := r.await(ctx, 30*time.Second); err != nil {
		r.stop()
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	return r, nil
}

// read forwards the child's events to the timeline and its answers to
// replies, then reaps the child.
func (r *remoteAgent) read(stdout io.Reader, tl *timeline) {
	defer close(r.exited)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var m agentMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Event != nil {
			tl.add(*m.Event)
			continue
		}
		select {
		case r.replies <- m:
		default: // nobody is listening any more (the demo is aborting)
		}
	}
	// Wait only after reading everything, as StdoutPipe requires.
	_ = r.cmd.Wait()
}

// await returns the next answer of the child.
func (r *remoteAgent) await(ctx context.Context, timeout time.Duration) (agentMessage, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m := <-r.replies:
		if m.Err != "" {
			return m, errors.New(m.Err)
		}
		return m, nil
	case <-r.exited:
		return agentMessage{}, fmt.Errorf("%s exited unexpectedly", r.id)
	case <-t.C:
		return agentMessage{}, fmt.Errorf("%s did not answer within %v", r.id, timeout)
	case <-ctx.Done():
		return agentMessage{}, ctx.Err()
	}
}

// Do implements demoAgent.
func (r *remoteAgent) Do(ctx context.Context, cmd demoCommand) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line, err := json.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	if _, err := r.stdin.Write(append(line, '\n')); err != nil {
		return 0, fmt.Errorf("%s: %w", r.id, err)
	}
	m, err := r.await(ctx, 30*time.Second)
	if err != nil {
		return 0, fmt.Errorf("%s: %s %s: %w", r.id, cmd.Op, cmd.Vol, err)
	}
	return m.Token, nil
}

// kill crashes the child: SIGKILL, no Stop, so its sessions simply die.
func (r *remoteAgent) kill() error {
	if err := syscall.Kill(r.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing %s: %w", r.id, err)
	}
	select {
	case <-r.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not die of SIGKILL within 10s", r.id, r.pid)
	}
}

// stop ends the child politely (EOF on its stdin makes it Stop its
// coordinator and exit), and kills it if it does not exit soon. It is safe
// to call after kill.
func (r *remoteAgent) stop() {
	_ = r.stdin.Close()
	select {
	case <-r.exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(r.pid, syscall.SIGKILL)
	<-r.exited
}
