package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

func TestElectRunsCommandWhileLeader(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	dir := t.TempDir()
	envFile, goFile := filepath.Join(dir, "env"), filepath.Join(dir, "go")
	p := startCLI(t, false, "elect", "job", "--prefix", prefix, "--value", "worker-1", "--agent-id", "e1", "--",
		"sh", "-c", `echo "$PGCOORD_ELECTION $PGCOORD_LEADER_VALUE $PGCOORD_FENCING_TOKEN" > "$0"; while [ ! -e "$1" ]; do sleep 0.05; done; exit 7`,
		envFile, goFile)
	fields := strings.Fields(waitForFile(t, p, envFile))
	require.Len(t, fields, 3)
	require.Equal(t, prefix+"job", fields[0])
	require.Equal(t, "worker-1", fields[1])
	token, err := strconv.ParseInt(fields[2], 10, 64)
	require.NoError(t, err)
	require.Positive(t, token)

	// While it leads: the library, "pgcoord leader" and its JSON agree.
	c := newCoord(t, prefix, "observer")
	l, err := c.Election("job").Leader(context.Background())
	require.NoError(t, err)
	require.Equal(t, prefix+"e1", l.MemberID)
	require.Equal(t, "worker-1", l.Value)
	require.Equal(t, token, l.Token)
	r := runCLI(t, "leader", prefix+"job")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, prefix+"job: "+prefix+"e1 value=\"worker-1\" token="+fields[2])
	// since in the tables' format (locks, members), quoted.
	require.Regexp(t, ` since="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d"\n$`, r.stdout)
	r = runCLI(t, "leader", prefix+"job", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var got leaderJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Equal(t, prefix+"job", got.Election)
	require.NotNil(t, got.Leader)
	require.Equal(t, token, got.Leader.Token)

	// A second elect waits in line and does not run its command.
	second := startCLI(t, false, "elect", "--prefix", prefix, "--timeout", "300ms", "job", "--", "touch", filepath.Join(dir, "second"))
	r = second.wait(t, 20*time.Second)
	require.Equal(t, exitBusy, r.code, r.stderr)
	require.Contains(t, r.stderr, "not leader of \""+prefix+"job\" after 300ms (led by "+prefix+"e1")
	require.NoFileExists(t, filepath.Join(dir, "second"))

	// The command's status is elect's; it resigned.
	require.NoError(t, os.WriteFile(goFile, []byte("go\n"), 0o600))
	r = p.wait(t, 20*time.Second)
	require.Equal(t, 7, r.code, r.stderr)
	_, err = c.Election("job").Leader(context.Background())
	require.ErrorIs(t, err, pgcoord.ErrNoLeader)
	r = runCLI(t, "leader", prefix+"job")
	require.Equal(t, exitOK, r.code)
	require.Equal(t, prefix+"job: no leader\n", r.stdout)
	r = runCLI(t, "leader", prefix+"job", "-o", "json")
	require.Equal(t, exitOK, r.code)
	require.JSONEq(t, `{"election": "`+prefix+`job", "leader": null}`, r.stdout)
}

func TestElectLostLeadershipStopsCommand(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startCLI(t, false, "elect", "--prefix", prefix, "--heartbeat", "200ms", "--grace", "3s", "job",
		"--", "sh", "-c", `echo $$ > "$0"; exec sleep 30`, pidFile)
	pid, err := strconv.Atoi(waitForFile(t, p, pidFile))
	require.NoError(t, err)
	tag, err := testPool.Exec(context.Background(),
		"SELECT pg_terminate_backend(backend_pid) FROM pgcoord.held_locks WHERE name = $1", pgcoord.ElectionLockPrefix+prefix+"job")
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())

	r := p.wait(t, 20*time.Second)
	require.Equal(t, exitLockLost, r.code, r.stderr)
	require.Contains(t, r.stderr, `pgcoord elect: lost leadership of "`+prefix+`job" while the command was running`)
	require.Less(t, r.took, 15*time.Second, "sleep 30 must have been stopped")
	requireGone(t, pid)
}

func TestElectUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"elect"},
		{"elect", "x"},
		{"elect", "x", "--"},
		{"elect", "--timeout", "-1s", "x", "--", "true"},
		{"elect", "--conflict-exit-code", "256", "x", "--", "true"},
		{"elect", "--value", "caf\xe9", "x", "--", "true"},
		{"leader"},
		{"leader", "a", "b"},
		{"leader", "a", "-o", "yaml"},
	} {
		r := runCLI(t, args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
}

func TestLeaderWatch(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	w, out := startWatch(t, "leader", prefix+"w", "--watch", "--interval", "200ms")
	lines := func() []string {
		s := strings.TrimSpace(out.String())
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	require.Eventually(t, func() bool { return len(lines()) >= 1 }, 20*time.Second, 20*time.Millisecond)
	c := newCoord(t, prefix, "a")
	e := c.Election("w")
	require.NoError(t, e.Campaign(context.Background(), "v1"))
	require.Eventually(t, func() bool { return len(lines()) >= 2 }, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, e.Proclaim(context.Background(), "v2"))
	require.Eventually(t, func() bool { return len(lines()) >= 3 }, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, e.Resign(context.Background()))
	require.Eventually(t, func() bool { return len(lines()) >= 4 }, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, w.Process.Signal(syscall.SIGINT))
	require.NoError(t, w.Wait())
	got := lines()
	require.Len(t, got, 4, "each change once: %q", got)
	require.Equal(t, prefix+"w: no leader", got[0])
	require.Contains(t, got[1], prefix+"a value=\"v1\"")
	require.Contains(t, got[2], prefix+"a value=\"v2\"")
	require.Equal(t, prefix+"w: no leader", got[3])
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWatch starts pgcoord with args like startCLI, with an output the
// test can read while it runs.
func startWatch(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), cliEnv+"=1", "DATABASE_URL="+testURL,
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}
