package pgcoord

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func memberIDs(ms []Member) []string {
	ids := []string{}
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestGroupJoinLeave(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	require.NoError(t, a.JoinGroup(ctx(t), "workers", map[string]any{"gpu": true, "slots": 4}))
	require.NoError(t, b.JoinGroup(ctx(t), "workers", nil))
	require.NoError(t, b.JoinGroup(ctx(t), "api", json.RawMessage(`{"port": 8080}`)))

	ms, err := b.GroupMembers(ctx(t), "workers")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{a.MemberID(), b.MemberID()}, memberIDs(ms))
	for _, m := range ms {
		if m.ID == a.MemberID() {
			require.JSONEq(t, `{"gpu": true, "slots": 4}`, string(m.Capabilities))
			require.Equal(t, os.Getpid(), m.PID)
			require.False(t, m.StartedAt.IsZero())
		} else {
			require.JSONEq(t, `null`, string(m.Capabilities))
		}
	}
	groups, err := a.Groups(ctx(t))
	require.NoError(t, err)
	require.Equal(t, []string{"api", "workers"}, groups)
	all, err := a.Members(ctx(t))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{a.MemberID(), b.MemberID()}, memberIDs(all))

	require.NoError(t, a.UpdateCapabilities(ctx(t), "workers", map[string]int{"slots": 8}))
	ms, err = b.GroupMembers(ctx(t), "workers")
	require.NoError(t, err)
	for _, m := range ms {
		if m.ID == a.MemberID() {
			require.JSONEq(t, `{"slots": 8}`, string(m.Capabilities))
		}
	}
	require.NoError(t, a.LeaveGroup(ctx(t), "workers"))
	require.ErrorIs(t, a.LeaveGroup(ctx(t), "workers"), ErrNotJoined)
	require.ErrorIs(t, a.UpdateCapabilities(ctx(t), "workers", 1), ErrNotJoined)
	ms, err = a.GroupMembers(ctx(t), "workers")
	require.NoError(t, err)
	require.Equal(t, []string{b.MemberID()}, memberIDs(ms))
	ms, err = a.GroupMembers(ctx(t), "nobody-here")
	require.NoError(t, err)
	require.Empty(t, ms)

	// A stopped member leaves its groups.
	require.NoError(t, b.Stop(ctx(t)))
	groups, err = a.Groups(ctx(t))
	require.NoError(t, err)
	require.Empty(t, groups)
	_, err = b.Groups(ctx(t))
	require.ErrorIs(t, err, ErrNotStarted)
}

func TestGroupBadInput(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	require.ErrorIs(t, c.JoinGroup(ctx(t), "", nil), ErrInvalidName)
	require.ErrorIs(t, c.JoinGroup(ctx(t), "g\x00", nil), ErrInvalidName)
	require.ErrorIs(t, c.JoinGroup(ctx(t), "g", make(chan int)), ErrInvalidCapabilities)
	require.ErrorIs(t, c.JoinGroup(ctx(t), "g", json.RawMessage(`{`)), ErrInvalidCapabilities)
	_, err := c.GroupMembers(ctx(t), "")
	require.ErrorIs(t, err, ErrInvalidName)
	_, err = c.WatchGroup(ctx(t), "")
	require.ErrorIs(t, err, ErrInvalidName)
}

// nextEvent returns the watch's next event, failing after d.
func nextEvent(t *testing.T, evs <-chan GroupEvent, d time.Duration) GroupEvent {
	t.Helper()
	select {
	case ev, ok := <-evs:
		require.True(t, ok, "watch closed")
		return ev
	case <-time.After(d):
		t.Fatalf("no group event within %v", d)
		return GroupEvent{}
	}
}

// runGroupChild is the child role "grouper": it joins PGCOORD_TEST_LOCK,
// prints "joined" and stays until killed.
func runGroupChild() int {
	ctx := context.Background()
	c, err := New(Config{
		ConnString:        os.Getenv("PGCOORD_TEST_URL"),
		Prefix:            os.Getenv("PGCOORD_TEST_PREFIX"),
		AgentID:           "child",
		HeartbeatInterval: 200 * time.Millisecond,
		SkipMigrations:    true,
		Logger:            quietLogger(),
	})
	if err == nil {
		err = c.Start(ctx)
	}
	if err == nil {
		err = c.JoinGroup(ctx, os.Getenv("PGCOORD_TEST_LOCK"), map[string]string{"role": "child"})
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer func() { _ = c.Stop(ctx) }()
	fmt.Println("joined")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
	}
	return 0
}

// Watchers see joins, updates and leaves, and a member whose process is
// killed leaves within 2 x SessionTimeout.
func TestWatchGroup(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	w, a := newCoord(t, p), newCoord(t, p)
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	evs, err := w.WatchGroup(wctx, "g")
	require.NoError(t, err)

	require.NoError(t, a.JoinGroup(ctx(t), "g", map[string]int{"v": 1}))
	ev := nextEvent(t, evs, 10*time.Second)
	require.Equal(t, Joined, ev.Kind)
	require.Equal(t, "g", ev.Group)
	require.Equal(t, a.MemberID(), ev.Member.ID)
	require.JSONEq(t, `{"v": 1}`, string(ev.Member.Capabilities))
	require.NoError(t, a.UpdateCapabilities(ctx(t), "g", map[string]int{"v": 2}))
	ev = nextEvent(t, evs, 10*time.Second)
	require.Equal(t, Updated, ev.Kind)
	require.JSONEq(t, `{"v": 2}`, string(ev.Member.Capabilities))
	require.NoError(t, a.LeaveGroup(ctx(t), "g"))
	ev = nextEvent(t, evs, 10*time.Second)
	require.Equal(t, Left, ev.Kind)
	require.Equal(t, a.MemberID(), ev.Member.ID)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"=grouper", "PGCOORD_TEST_URL="+testURL,
		"PGCOORD_TEST_PREFIX="+p, "PGCOORD_TEST_LOCK=g")
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
	(&holderProcess{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}).expect(t, "joined")
	ev = nextEvent(t, evs, 10*time.Second)
	require.Equal(t, Joined, ev.Kind)
	require.Equal(t, p+"child", ev.Member.ID)
	killed := time.Now()
	require.NoError(t, cmd.Process.Kill())
	ev = nextEvent(t, evs, 2*w.cfg.SessionTimeout)
	require.Equal(t, Left, ev.Kind)
	require.Equal(t, p+"child", ev.Member.ID)
	t.Logf("Left seen %v after SIGKILL", time.Since(killed))

	cancel()
	for range evs {
	}
}

// A watch whose connection breaks while a member joins and another leaves
// reconciles when it is back: both events arrive, once each.
func TestWatchGroupReconnects(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	w, a, b := newCoord(t, p), newCoord(t, p), newCoord(t, p)
	require.NoError(t, b.JoinGroup(ctx(t), "g", "b"))
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	evs, err := w.WatchGroup(wctx, "g")
	require.NoError(t, err)

	_, err = testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, w.control.backendPID)
	require.NoError(t, err)
	require.NoError(t, a.JoinGroup(ctx(t), "g", "a"))
	require.NoError(t, b.LeaveGroup(ctx(t), "g"))

	got := map[string]EventKind{}
	for range 2 {
		ev := nextEvent(t, evs, 20*time.Second)
		_, dup := got[ev.Member.ID]
		require.False(t, dup, "event for %s twice", ev.Member.ID)
		got[ev.Member.ID] = ev.Kind
	}
	require.Equal(t, map[string]EventKind{a.MemberID(): Joined, b.MemberID(): Left}, got)
	select {
	case ev := <-evs:
		t.Fatalf("an extra event: %+v", ev)
	case <-time.After(3 * w.cfg.HeartbeatInterval):
	}
}
