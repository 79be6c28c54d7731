package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cutControl terminates c's control backend and waits until it is gone, so
// that the control session is reconnecting (its backoff is the test's).
func cutControl(t *testing.T, c *Coordinator) {
	t.Helper()
	require.NoError(t, c.control.lock(ctx(t)))
	pid := c.control.backendPID
	c.control.unlock()
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var gone bool
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&gone))
		return gone
	}, 10*time.Second, 5*time.Millisecond)
}

// Every primitive that writes or reads on the control session after it has
// won its lock (an election's term, a semaphore's limit, a group's row)
// waits for a control reconnect under way instead of failing.
func TestPrimitivesDuringControlReconnect(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		// A reconnect that takes a while: each step below runs within it.
		cfg.InitialReconnectBackoff = 400 * time.Millisecond
		cfg.MaxReconnectBackoff = 500 * time.Millisecond
	})
	e := c.Election("e")
	sem := c.Semaphore("s", 2)
	steps := []struct {
		name string
		run  func() error
	}{
		{"Campaign", func() error { return e.Campaign(ctx(t), "one") }},
		{"Proclaim", func() error { return e.Proclaim(ctx(t), "two") }},
		{"Leader", func() error {
			l, err := e.Leader(ctx(t))
			if err == nil && l.Value != "two" {
				err = errors.New("leader's value is " + l.Value)
			}
			return err
		}},
		{"Semaphore.Acquire", func() error {
			ok, err := sem.Acquire(ctx(t), NoWait)
			if err == nil && !ok {
				err = errors.New("busy")
			}
			return err
		}},
		{"JoinGroup", func() error { return c.JoinGroup(ctx(t), "g", map[string]int{"v": 1}) }},
		{"UpdateCapabilities", func() error { return c.UpdateCapabilities(ctx(t), "g", map[string]int{"v": 2}) }},
		{"LeaveGroup", func() error { return c.LeaveGroup(ctx(t), "g") }},
	}
	for _, step := range steps {
		reconnects := c.Stats().Reconnects
		cutControl(t, c)
		require.NoError(t, step.run(), step.name)
		require.Greater(t, c.Stats().Reconnects, reconnects, "%s waited for the reconnect", step.name)
	}
	require.True(t, e.IsLeader())
	require.NoError(t, e.Resign(ctx(t)))
	require.NoError(t, sem.Release(ctx(t)))
}

// An application's transaction that guards a write with fence_ok holds the
// fence row: a new holder's fencing token waits for it. That wait must not
// touch the member's liveness: the member stays in live_members, a group
// watcher sees nothing, and the fence lands once the application commits.
func TestFenceBlockedByAppKeepsMemberLive(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	// The test's default heartbeat and SessionTimeout: a loaded machine
	// must not end the new hold by its lease while the fence waits.
	fencing := func(cfg *Config) { cfg.Fencing = true }
	a, w := newCoord(t, p, fencing), newCoord(t, p, fencing)
	require.NoError(t, a.JoinGroup(ctx(t), "g", nil))
	wctx, stopWatch := context.WithCancel(ctx(t))
	defer stopWatch()
	events, err := w.WatchGroup(wctx, "g")
	require.NoError(t, err)

	l := a.GetLock("fenced")
	mustAcquire(t, l, NoWait)
	key, tok := l.Key(), l.Token()
	require.NoError(t, l.Release(ctx(t)))
	tx, err := testPool.Begin(ctx(t))
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	var ok bool
	require.NoError(t, tx.QueryRow(ctx(t), `SELECT pgcoord.fence_ok($1, $2)`, key, tok).Scan(&ok))
	require.True(t, ok)

	res := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), NoWait)
		if err == nil && !ok {
			err = errors.New("busy")
		}
		res <- err
	}()
	// Longer than SessionTimeout, and than the bound of one control
	// statement (opTimeout), which ended the fence's wait by closing the
	// control connection, and with it the member lock.
	block := a.opTimeout() + time.Second
	end := time.After(block)
	for done := false; !done; {
		select {
		case err := <-res:
			t.Fatalf("acquired (%v) while the application's transaction held the fence", err)
		case ev := <-events:
			t.Fatalf("the watcher saw %v of %s while a fence waited", ev.Kind, ev.Member.ID)
		case <-end:
			done = true
		case <-time.After(50 * time.Millisecond):
			var live bool
			require.NoError(t, testPool.QueryRow(ctx(t), `SELECT EXISTS (SELECT 1 FROM pgcoord.live_members WHERE member_id = $1)`, a.MemberID()).Scan(&live))
			require.True(t, live, "the member left live_members while its fence waited")
		}
	}
	require.True(t, a.IsActive(), "the heartbeat kept beating")
	require.NoError(t, tx.Commit(ctx(t)))
	select {
	case err := <-res:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the fence did not land after the application committed")
	}
	require.Greater(t, l.Token(), tok)
	var fence int64
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT token FROM pgcoord.fences WHERE key = $1`, key).Scan(&fence))
	require.Equal(t, l.Token(), fence)
	require.NoError(t, l.Release(ctx(t)))
	select {
	case ev := <-events:
		t.Fatalf("the watcher saw %v of %s", ev.Kind, ev.Member.ID)
	default:
	}
}
