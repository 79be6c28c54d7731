package pgcoord

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startLeaderChild starts a child process that leads election name of
// prefix p with the default configuration, and returns it once it leads.
func startLeaderChild(t *testing.T, p, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"=leader", "PGCOORD_TEST_URL="+testURL,
		"PGCOORD_TEST_PREFIX="+p, "PGCOORD_TEST_LOCK="+name, "PGCOORD_TEST_HEARTBEAT=0s")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	child := &holderProcess{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	var token int64
	_, err = fmt.Sscanf(child.expect(t, "leader"), "leader %d", &token)
	require.NoError(t, err)
	return cmd
}

// defaultCoord is a coordinator with the default configuration.
func defaultCoord(t *testing.T, p string) *Coordinator {
	return newCoord(t, p) // the suite's coordinators use the defaults
}

// The grace, with default settings. A leader killed just now is replaced
// after two and a half of its heartbeats: if it still ran, it would have
// been told by then. A leader whose member has been silent for longer than
// its lease (a crashed singleton restarted later) is replaced within a few
// round trips: it holds nothing for sure (see Election.begin).
func TestElectionGraceSkipped(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	b := defaultCoord(t, p)
	hb := b.cfg.HeartbeatInterval

	// Killed just now: the full grace.
	cmd := startLeaderChild(t, p, "just-killed")
	eb := b.Election("just-killed")
	res := campaign(t, eb, "b")
	requireCampaignWaiting(t, eb, b)
	killed := time.Now()
	require.NoError(t, cmd.Process.Kill())
	require.NoError(t, <-res)
	took := time.Since(killed)
	t.Logf("predecessor killed just now: new leader %v after the kill (heartbeat %v, grace %v)", took.Round(time.Millisecond), hb, 2*hb+hb/2)
	require.GreaterOrEqual(t, took, 2*hb, "the grace was paid")

	// Silent for longer than its lease: no grace.
	cmd = startLeaderChild(t, p, "long-dead")
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	lease := b.lease()                          // the child's: the same defaults
	time.Sleep(lease + graceMargin(lease) + hb) // its last beat was up to hb before the kill
	ec := b.Election("long-dead")
	began := time.Now()
	require.NoError(t, ec.Campaign(ctx(t), "b"))
	took = time.Since(began)
	t.Logf("predecessor silent longer than its lease (%v): new leader %v after Campaign began", lease, took.Round(time.Millisecond))
	require.Less(t, took, hb, "the grace was skipped")
}

// RunAsLeader does not drop Resign's error: when the resignation cannot be
// recorded, the leadership still ends (the lock is released) and the error
// is returned with fn's.
func TestRunAsLeaderReturnsResignError(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	name := "resign-refused"
	fn := "refuse_resign_" + randomSuffix()
	conn := connect(t, testURL)
	_, err := conn.Exec(ctx(t), `CREATE FUNCTION public.`+fn+`() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'resignation refused by the test'; END $$;
		CREATE TRIGGER `+fn+` BEFORE UPDATE ON pgcoord.elections FOR EACH ROW
		WHEN (OLD.election = '`+c.cfg.Prefix+name+`' AND NEW.resigned_at IS NOT NULL)
		EXECUTE FUNCTION public.`+fn+`()`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), `DROP TRIGGER IF EXISTS `+fn+` ON pgcoord.elections; DROP FUNCTION IF EXISTS public.`+fn+`()`)
	})

	fnErr := errors.New("fn's own error")
	err = RunAsLeader(ctx(t), c, name, "v", func(context.Context) error { return fnErr })
	require.ErrorIs(t, err, fnErr)
	require.ErrorContains(t, err, "recording the resignation")
	require.ErrorContains(t, err, "resignation refused by the test")
	// The leadership ended all the same: the lock is free.
	e := c.Election(name)
	ok, err := e.lock.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok, "the election's lock was released")
	require.NoError(t, e.lock.Release(ctx(t)))
}
