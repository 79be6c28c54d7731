package pgcoord

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// campaign starts e's Campaign in a goroutine; the channel gets its result.
func campaign(t testing.TB, e *Election, value string) <-chan error {
	res := make(chan error, 1)
	go func() { res <- e.Campaign(ctx(t), value) }()
	return res
}

// electionWaiting waits until someone waits on the server, or beyond its
// budget, for e's lock.
func requireCampaignWaiting(t testing.TB, e *Election, c *Coordinator) {
	t.Helper()
	require.Eventually(t, func() bool {
		return waiters(t, e.lock.key) > 0 || c.Stats().WaitsBeyondBudget > 0
	}, 10*time.Second, 5*time.Millisecond)
}

func TestElectionCampaignResign(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	// a's heartbeat is long, so that a successor who waited for a to be
	// told (2.5 heartbeats) would be seen to: after a Resign it must not.
	a := newCoord(t, p, func(c *Config) { c.HeartbeatInterval = 3 * time.Second; c.SessionTimeout = 15 * time.Second })
	b := newCoord(t, p)
	ea, eb := a.Election("scheduler"), b.Election("scheduler")

	_, err := eb.Leader(ctx(t))
	require.ErrorIs(t, err, ErrNoLeader)
	require.ErrorIs(t, eb.Resign(ctx(t)), ErrNotLeader)
	require.ErrorIs(t, eb.Proclaim(ctx(t), "x"), ErrNotLeader)
	require.False(t, eb.IsLeader())
	require.Zero(t, eb.Token())
	requireClosedWithin(t, eb.Done(), 0, "Done of a non-leader")

	require.NoError(t, ea.Campaign(ctx(t), "a:8080"))
	require.True(t, ea.IsLeader())
	tokA := ea.Token()
	require.Positive(t, tokA)
	doneA := ea.Done()
	select {
	case <-doneA:
		t.Fatal("Done closed while leader")
	default:
	}
	got, err := eb.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, a.MemberID(), got.MemberID)
	require.Equal(t, "a:8080", got.Value)
	require.Equal(t, tokA, got.Token)
	require.False(t, got.Since.IsZero())

	require.NoError(t, ea.Proclaim(ctx(t), "a:9090"))
	got, err = eb.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "a:9090", got.Value)
	require.Equal(t, tokA, got.Token, "Proclaim keeps the term")

	res := campaign(t, eb, "b:8080")
	requireCampaignWaiting(t, eb, b)
	select {
	case err := <-res:
		t.Fatalf("b's Campaign returned while a leads: %v", err)
	default:
	}
	resigned := time.Now()
	require.NoError(t, ea.Resign(ctx(t)))
	requireClosedWithin(t, doneA, 0, "a's Done after Resign")
	require.False(t, ea.IsLeader())
	require.Zero(t, ea.Token())
	require.NoError(t, <-res)
	t.Logf("new leader %v after Resign", time.Since(resigned))
	// Well under the 7.5s a successor waits for a predecessor that did
	// not resign (2.5 of a's heartbeats).
	require.Less(t, time.Since(resigned), 3*time.Second, "takeover after Resign")
	require.True(t, eb.IsLeader())
	require.Greater(t, eb.Token(), tokA, "terms' tokens increase")
	got, err = ea.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, b.MemberID(), got.MemberID)
	require.Equal(t, "b:8080", got.Value)

	// Campaign while leader proclaims.
	require.NoError(t, eb.Campaign(ctx(t), "b:9090"))
	got, err = ea.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "b:9090", got.Value)

	tokB := eb.Token()
	require.NoError(t, eb.Resign(ctx(t)))
	_, err = ea.Leader(ctx(t))
	require.ErrorIs(t, err, ErrNoLeader)
	require.NoError(t, ea.Campaign(ctx(t), "a again"))
	require.Greater(t, ea.Token(), tokB, "terms' tokens increase")
	require.NoError(t, ea.Resign(ctx(t)))
	require.ErrorIs(t, ea.Resign(ctx(t)), ErrNotLeader)
}

func TestElectionBadInput(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	e := c.Election("")
	require.ErrorIs(t, e.Campaign(ctx(t), "v"), ErrInvalidName)
	_, err := e.Leader(ctx(t))
	require.ErrorIs(t, err, ErrInvalidName)
	require.ErrorIs(t, c.Election("nul\x00").Campaign(ctx(t), "v"), ErrInvalidName)

	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	require.ErrorIs(t, c.Election("x").Campaign(cctx, "v"), context.Canceled)

	stopped, err := New(Config{ConnString: testURL, Logger: quietLogger()})
	require.NoError(t, err)
	require.ErrorIs(t, stopped.Election("x").Campaign(ctx(t), "v"), ErrNotStarted)
	_, err = stopped.Election("x").Leader(ctx(t))
	require.ErrorIs(t, err, ErrNotStarted)
}

// Different prefixes never share an election; one prefix's elections are
// independent of each other and of a lock of the same name.
func TestElectionNamespaces(t *testing.T) {
	t.Parallel()
	p1, p2 := testPrefix(t), testPrefix(t)
	a, b := newCoord(t, p1), newCoord(t, p2)
	require.NoError(t, a.Election("x").Campaign(ctx(t), ""))
	require.NoError(t, b.Election("x").Campaign(ctx(t), ""))
	require.NoError(t, a.Election("y").Campaign(ctx(t), ""))
	mustAcquire(t, a.GetLock("x"), NoWait)
}

// The leader's lock session is terminated: the leader is told (Done
// closed) before the successor's Campaign returns, which it does within
// 2 x SessionTimeout.
func TestElectionTakeoverTerminated(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	ea, eb := a.Election("db-writer"), b.Election("db-writer")
	require.NoError(t, ea.Campaign(ctx(t), "a"))
	doneA := ea.Done()
	tokA := ea.Token()

	type result struct {
		err      error
		aWasTold bool
	}
	res := make(chan result, 1)
	go func() {
		err := eb.Campaign(ctx(t), "b")
		told := false
		select {
		case <-doneA:
			told = true
		default:
		}
		res <- result{err, told}
	}()
	requireCampaignWaiting(t, eb, b)

	pid := heldBy(t, ea.lock.key)
	require.NotZero(t, pid)
	killed := time.Now()
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)

	r := <-res
	t.Logf("new leader %v after the old leader's session was terminated", time.Since(killed))
	require.NoError(t, r.err)
	require.True(t, r.aWasTold, "the old leader's Done must close before the new leader's Campaign returns")
	require.Less(t, time.Since(killed), 2*b.cfg.SessionTimeout)
	require.False(t, ea.IsLeader())
	require.ErrorIs(t, ea.Resign(ctx(t)), ErrNotLeader)
	require.Greater(t, eb.Token(), tokA)
	got, err := ea.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, b.MemberID(), got.MemberID)

	// The old leader campaigns again: it waits behind b.
	res2 := campaign(t, ea, "a again")
	requireCampaignWaiting(t, ea, a)
	require.NoError(t, eb.Resign(ctx(t)))
	require.NoError(t, <-res2)
	require.True(t, ea.IsLeader())
}

// runLeaderChild is the child role "leader": it campaigns for
// PGCOORD_TEST_LOCK, prints "leader TOKEN" and leads until killed.
func runLeaderChild() int {
	ctx := context.Background()
	hb := 200 * time.Millisecond
	if d, err := time.ParseDuration(os.Getenv("PGCOORD_TEST_HEARTBEAT")); err == nil {
		hb = d // 0: the default
	}
	c, err := New(Config{
		ConnString:        os.Getenv("PGCOORD_TEST_URL"),
		Prefix:            os.Getenv("PGCOORD_TEST_PREFIX"),
		HeartbeatInterval: hb,
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
	e := c.Election(os.Getenv("PGCOORD_TEST_LOCK"))
	if err := e.Campaign(ctx, "child"); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("leader", e.Token())
	go func() {
		<-e.Done()
		fmt.Println("lost")
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
	}
	return 0
}

// A leader process SIGKILLed: a campaigner takes over within
// 2 x SessionTimeout, and observers see the new leader.
func TestElectionTakeoverSIGKILL(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"=leader", "PGCOORD_TEST_URL="+testURL,
		"PGCOORD_TEST_PREFIX="+p, "PGCOORD_TEST_LOCK=cron")
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
	var childToken int64
	_, err = fmt.Sscanf(child.expect(t, "leader"), "leader %d", &childToken)
	require.NoError(t, err)

	b, o := newCoord(t, p), newCoord(t, p)
	eb := b.Election("cron")
	octx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	seen := o.Election("cron").Observe(octx)
	first := <-seen
	require.Equal(t, "child", first.Value)
	require.Equal(t, childToken, first.Token)

	res := campaign(t, eb, "b")
	requireCampaignWaiting(t, eb, b)
	killed := time.Now()
	require.NoError(t, cmd.Process.Kill())
	require.NoError(t, <-res)
	t.Logf("new leader %v after SIGKILL of the old one (its heartbeat 200ms)", time.Since(killed))
	require.Less(t, time.Since(killed), 2*b.cfg.SessionTimeout)
	require.Greater(t, eb.Token(), childToken)
	for l := range seen {
		if l.MemberID == b.MemberID() {
			require.Less(t, time.Since(killed), 2*b.cfg.SessionTimeout)
			break
		}
		require.Zero(t, l, "between the two leaders, only none")
	}
}

// Observe: the current leader first, then every change once.
func TestElectionObserve(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b, o := newCoord(t, p), newCoord(t, p), newCoord(t, p)
	ea, eb := a.Election("obs"), b.Election("obs")
	octx, cancel := context.WithCancel(ctx(t))
	seen := o.Election("obs").Observe(octx)
	var got []Leader
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for l := range seen {
			mu.Lock()
			got = append(got, l)
			mu.Unlock()
		}
	}()
	last := func() Leader {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return Leader{MemberID: "?"}
		}
		return got[len(got)-1]
	}
	waitFor := func(want func(Leader) bool) {
		t.Helper()
		require.Eventually(t, func() bool { return want(last()) }, 10*time.Second, 5*time.Millisecond)
	}
	waitFor(func(l Leader) bool { return l == Leader{} })
	require.NoError(t, ea.Campaign(ctx(t), "a1"))
	waitFor(func(l Leader) bool { return l.Value == "a1" })
	require.NoError(t, ea.Proclaim(ctx(t), "a2"))
	waitFor(func(l Leader) bool { return l.Value == "a2" })
	require.NoError(t, ea.Resign(ctx(t)))
	waitFor(func(l Leader) bool { return l == Leader{} })
	require.NoError(t, eb.Campaign(ctx(t), "b1"))
	waitFor(func(l Leader) bool { return l.Value == "b1" })
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var values []string
	for i, l := range got {
		if i > 0 {
			require.False(t, sameTerm(l, got[i-1]), "change %d seen twice: %+v", i, got)
		}
		values = append(values, l.Value)
	}
	require.Equal(t, []string{"", "a1", "a2", "", "b1"}, values)
	require.Equal(t, a.MemberID(), got[1].MemberID)
	require.Equal(t, got[1].Token, got[2].Token)
	require.Greater(t, got[4].Token, got[2].Token)
}

// Observers see a change after their coordinator's connection broke: the
// listener reconciles.
func TestElectionObserveReconnect(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, o := newCoord(t, p), newCoord(t, p)
	ea := a.Election("rc")
	octx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	seen := o.Election("rc").Observe(octx)
	require.Equal(t, Leader{}, <-seen)
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, o.control.backendPID)
	require.NoError(t, err)
	require.NoError(t, ea.Campaign(ctx(t), "after"))
	select {
	case l := <-seen:
		require.Equal(t, "after", l.Value)
	case <-time.After(30 * time.Second):
		t.Fatal("observer did not see the leader after its connection broke")
	}
}

// RunAsLeader: fn runs while leader; a loss cancels its ctx with cause
// ErrLockLost and the result wraps ErrLockLost; it resigns when fn returns.
func TestRunAsLeader(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)

	var ran bool
	require.NoError(t, RunAsLeader(ctx(t), a, "job", "a", func(ctx context.Context) error {
		ran = true
		l, err := b.Election("job").Leader(ctx)
		require.NoError(t, err)
		require.Equal(t, a.MemberID(), l.MemberID)
		return nil
	}))
	require.True(t, ran)
	_, err := b.Election("job").Leader(ctx(t))
	require.ErrorIs(t, err, ErrNoLeader, "resigned when fn returned")

	boom := errors.New("boom")
	require.ErrorIs(t, RunAsLeader(ctx(t), a, "job", "a", func(context.Context) error { return boom }), boom)

	err = RunAsLeader(ctx(t), a, "job", "a", func(ctx context.Context) error {
		pid := heldBy(t, a.Election("job").lock.key)
		_, err := testPool.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid)
		require.NoError(t, err)
		<-ctx.Done()
		require.ErrorIs(t, context.Cause(ctx), ErrLockLost)
		return nil
	})
	require.ErrorIs(t, err, ErrLockLost)

	// ctx ends before leadership is won: fn does not run.
	eb := b.Election("job")
	require.NoError(t, eb.Campaign(ctx(t), "b"))
	cctx, cancel := context.WithTimeout(ctx(t), 200*time.Millisecond)
	defer cancel()
	err = RunAsLeader(cctx, a, "job", "a", func(context.Context) error {
		t.Error("fn ran without leadership")
		return nil
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, eb.Resign(ctx(t)))
}

// Campaigning for many elections costs no backend beyond the session
// budget: waits beyond it are woken by the control session.
func TestElectionCampaignBudget(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	leader, candidate := newCoord(t, p), newCoord(t, p)
	const n = 12
	var res []<-chan error
	for i := range n {
		name := fmt.Sprintf("e%d", i)
		require.NoError(t, leader.Election(name).Campaign(ctx(t), "l"))
		res = append(res, campaign(t, candidate.Election(name), "c"))
	}
	require.Eventually(t, func() bool { return candidate.Stats().WaitsBeyondBudget >= n-2 }, 10*time.Second, 10*time.Millisecond)
	require.LessOrEqual(t, backendsOf(t, candidate), 4)
	require.LessOrEqual(t, backendsOf(t, leader), 4)
	require.NoError(t, leader.Stop(ctx(t)))
	for _, r := range res {
		require.NoError(t, <-r)
	}
	require.LessOrEqual(t, backendsOf(t, candidate), 4)
}

// A leader process frozen (SIGSTOP) is replaced once the server ends its
// idle sessions (its SessionTimeout) and the grace has passed, within
// 2 x SessionTimeout; resumed, it is told at once (Done closes).
func TestElectionTakeoverFrozen(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"=leader", "PGCOORD_TEST_URL="+testURL,
		"PGCOORD_TEST_PREFIX="+p, "PGCOORD_TEST_LOCK=frozen")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	child := &holderProcess{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	child.expect(t, "leader")

	// The child's SessionTimeout is its default for a 200ms heartbeat.
	childTimeout := max(5*200*time.Millisecond, 2*200*time.Millisecond+defaultLeaseFloor)
	b := newCoord(t, p)
	eb := b.Election("frozen")
	res := campaign(t, eb, "b")
	requireCampaignWaiting(t, eb, b)
	require.NoError(t, cmd.Process.Signal(syscall.SIGSTOP))
	frozen := time.Now()
	require.NoError(t, <-res)
	t.Logf("new leader %v after SIGSTOP of the old one (its SessionTimeout %v)", time.Since(frozen), childTimeout)
	require.Less(t, time.Since(frozen), 2*childTimeout)
	require.NoError(t, cmd.Process.Signal(syscall.SIGCONT))
	child.expect(t, "lost")
	require.True(t, eb.IsLeader())
}
