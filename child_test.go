package pgcoord

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Child processes: the test binary re-executes itself as a lock holder in
// another OS process, the way a second service instance would hold a lock.

const childRoleEnv = "PGCOORD_TEST_CHILD"

// runChild is the whole life of a child process; it returns the exit code.
// Role "holder" starts a coordinator, takes PGCOORD_TEST_LOCK, prints
// "held TOKEN", and releases it when a line "release" arrives on stdin
// (printing "released"); it prints "lost" if the hold is lost, and stops at
// EOF.
func runChild(role string) int {
	if role == "poller" {
		return runPoller()
	}
	if role == "leader" {
		return runLeaderChild()
	}
	if role == "grouper" {
		return runGroupChild()
	}
	if role == "waiter" {
		return runWaiterChild()
	}
	if role != "holder" {
		fmt.Fprintln(os.Stderr, "unknown child role", role)
		return 2
	}
	ctx := context.Background()
	c, err := New(Config{
		ConnString:        os.Getenv("PGCOORD_TEST_URL"),
		Prefix:            os.Getenv("PGCOORD_TEST_PREFIX"),
		HeartbeatInterval: 200 * time.Millisecond,
		SkipMigrations:    true,
		Logger:            quietLogger(),
	})
	if err == nil {
		err = c.Start(ctx)
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer func() { _ = c.Stop(ctx) }()
	l := c.GetLock(os.Getenv("PGCOORD_TEST_LOCK"))
	ok, err := l.Acquire(ctx, Wait)
	if !ok || err != nil {
		fmt.Println("error", ok, err)
		return 1
	}
	fmt.Println("held", l.Token())
	go func() {
		<-l.Lost()
		fmt.Println("lost")
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "release" {
			if err := l.Release(ctx); err != nil {
				fmt.Println("error", err)
				return 1
			}
			fmt.Println("released")
		}
	}
	return 0
}

// holderProcess is a child process holding a lock.
type holderProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	token int64
}

// startHolder starts a child process that holds prefix+name, and waits until
// it reports the lock held.
func startHolder(t *testing.T, prefix, name string) *holderProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childRoleEnv+"=holder",
		"PGCOORD_TEST_URL="+testURL,
		"PGCOORD_TEST_PREFIX="+prefix,
		"PGCOORD_TEST_LOCK="+name,
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &holderProcess{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() {
		_ = p.stdin.Close()
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
	line := p.expect(t, "held")
	_, err = fmt.Sscanf(line, "held %d", &p.token)
	require.NoError(t, err)
	return p
}

// expect reads the child's next line and requires it to start with prefix.
func (p *holderProcess) expect(t *testing.T, prefix string) string {
	t.Helper()
	lines := make(chan string, 1)
	go func() {
		if p.out.Scan() {
			lines <- p.out.Text()
		}
		close(lines)
	}()
	select {
	case line := <-lines:
		require.True(t, strings.HasPrefix(line, prefix), "child said %q, want %q", line, prefix)
		return line
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not say %q", prefix)
		return ""
	}
}
