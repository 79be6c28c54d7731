package pgcoord

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A coordinator given a multi-host connection string follows a failover:
// the primary stops at once (pg_ctl stop -m immediate), the asynchronous
// standby is promoted; every hold on the old primary is reported lost
// (Lost closed, Synchronized's ctx cancelled with ErrLockLost, leaders'
// terms end: Done closed, RunAsLeader's ctx cancelled), the
// coordinator reconnects to the new primary with its backoff, its member
// row is live there, every session is there, and new acquires and
// campaigns succeed with larger tokens. The time from the old primary's death to the first
// successful acquire on the new one is logged ("failover: ...").
//
// It runs with the test's short heartbeat and backoff, and with the
// defaults (HeartbeatInterval 1s, InitialReconnectBackoff 100ms).
func TestFailoverFollow(t *testing.T) {
	t.Parallel()
	t.Run("short", func(t *testing.T) {
		t.Parallel()
		failoverFollow(t)
	})
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		failoverFollow(t, func(cfg *Config) {
			cfg.HeartbeatInterval = 0
			cfg.SessionTimeout = 0
			cfg.InitialReconnectBackoff = 0
			cfg.MaxReconnectBackoff = 0
		})
	})
}

func failoverFollow(t *testing.T, mods ...func(*Config)) {
	p := haPair(t)
	primary, standby := p.Primary(), p.Standby()
	conn := multiHost("&target_session_attrs=read-write", primary, standby)
	c := haCoord(t, conn, mods...)
	other := haCoord(t, conn, append(mods, func(cfg *Config) { cfg.Prefix = c.cfg.Prefix })...)

	// A hold on a lock session, one on a wait session, one in Synchronized.
	onLock := c.GetLock("on-lock")
	mustAcquire(t, onLock, NoWait)
	blocker := other.GetLock("on-wait")
	mustAcquire(t, blocker, NoWait)
	onWait := c.GetLock("on-wait")
	waited := make(chan error, 1)
	go func() {
		ok, err := onWait.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = errors.New("Wait returned false")
		}
		waited <- err
	}()
	require.Eventually(t, func() bool {
		var n int
		err := connect(t, primary.URL()).QueryRow(ctx(t),
			`SELECT count(*) FROM pgcoord.held_locks WHERE key = $1 AND NOT granted`, onWait.Key()).Scan(&n)
		return err == nil && n == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, blocker.Release(ctx(t)))
	require.NoError(t, <-waited)
	started := make(chan struct{})
	cause := make(chan error, 1)
	synced := make(chan error, 1)
	go func() {
		synced <- Synchronized(ctx(t), "in-sync", nil, func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return nil
		}, WithCoordinator(c))
	}()
	<-started
	// A leader by Campaign, and one under RunAsLeader.
	leader := c.Election("leader")
	require.NoError(t, leader.Campaign(ctx(t), "before"))
	led := make(chan struct{})
	leadCause := make(chan error, 1)
	ran := make(chan error, 1)
	go func() {
		ran <- RunAsLeader(ctx(t), c, "runner", "before", func(ctx context.Context) error {
			close(led)
			<-ctx.Done()
			leadCause <- context.Cause(ctx)
			return nil
		})
	}()
	<-led
	before := max(onLock.Token(), onWait.Token(), leader.Token())
	caughtUp(t, p)

	// From the old primary's death, an acquirer tries a fresh name until
	// it gets it on the new primary; until then attempts fail (no primary
	// yet, or a session ahead of the control session's reconnect:
	// ErrWrongServer).
	after := c.GetLock("after-failover")
	died := time.Now()
	require.NoError(t, primary.StopImmediate()) // Failover's first step, done here so no attempt reaches the old primary
	type firstAcquire struct {
		took     time.Duration
		refusals []error
	}
	acquired := make(chan firstAcquire, 1)
	go func() {
		var first firstAcquire
		for time.Since(died) < 30*time.Second {
			ok, err := after.Acquire(context.Background(), NoWait)
			if ok {
				first.took = time.Since(died)
				break
			}
			if err == nil {
				err = errors.New("busy: the name is free")
			}
			first.refusals = append(first.refusals, err)
			time.Sleep(2 * time.Millisecond)
		}
		acquired <- first
	}()
	newPrimary, err := p.Failover()
	require.NoError(t, err)
	promoted := time.Since(died)

	requireClosedWithin(t, onLock.Lost(), 10*time.Second, "the lock session's hold")
	requireClosedWithin(t, onWait.Lost(), 10*time.Second, "the wait session's hold")
	require.ErrorIs(t, <-cause, ErrLockLost, "Synchronized's ctx")
	require.ErrorIs(t, <-synced, ErrLockLost, "Synchronized's result")
	require.ErrorIs(t, onLock.Release(ctx(t)), ErrLockLost)
	require.ErrorIs(t, onWait.Release(ctx(t)), ErrLockLost)
	requireClosedWithin(t, leader.Done(), 10*time.Second, "the leader's term")
	require.False(t, leader.IsLeader())
	require.ErrorIs(t, <-leadCause, ErrLockLost, "RunAsLeader's ctx")
	require.ErrorIs(t, <-ran, ErrLockLost, "RunAsLeader's result")

	first := <-acquired
	require.NotZero(t, first.took, "no acquire within 30s of the failover; refusals: %v", first.refusals)
	wrongServer := 0
	for _, err := range first.refusals {
		if errors.Is(err, ErrWrongServer) {
			wrongServer++
		}
	}
	t.Logf("failover: first acquire on the new primary %v after the old one was stopped (HeartbeatInterval %v, InitialReconnectBackoff %v; promotion done after %v; %d attempts refused before, %d with ErrWrongServer)",
		first.took.Round(time.Millisecond), c.cfg.HeartbeatInterval, c.cfg.InitialReconnectBackoff, promoted.Round(time.Millisecond), len(first.refusals), wrongServer)
	if n := len(first.refusals); n > 0 {
		t.Logf("first refusal: %v; last: %v", first.refusals[0], first.refusals[n-1])
	}
	require.Greater(t, after.Token()>>48, before>>48, "the first token after the failover is from the new primary's timeline")
	require.Greater(t, after.Token(), before, "tokens go on increasing")
	require.NoError(t, after.Release(ctx(t)))

	require.Eventually(t, c.IsActive, 10*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, c.Stats().Reconnects, uint64(1))
	var live bool
	require.NoError(t, connect(t, newPrimary.URL()).QueryRow(ctx(t),
		`SELECT EXISTS (SELECT 1 FROM pgcoord.live_members WHERE member_id = $1)`, c.MemberID()).Scan(&live))
	require.True(t, live, "the member row is live on the new primary")
	mustAcquire(t, onLock, NoWait)
	require.Greater(t, onLock.Token(), before)
	mustAcquire(t, onWait, NoWait)
	require.Positive(t, sessionsOn(t, newPrimary.URL(), c))
	require.NoError(t, onLock.Release(ctx(t)))
	require.NoError(t, onWait.Release(ctx(t)))
	require.NoError(t, Synchronized(ctx(t), "in-sync", nil, func(context.Context) error { return nil }, WithCoordinator(c)))
	require.NoError(t, leader.Campaign(ctx(t), "after"))
	require.Greater(t, leader.Token()>>48, before>>48, "the new term's token is from the new timeline")
	current, err := leader.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, c.MemberID(), current.MemberID)
	require.Equal(t, "after", current.Value)
	require.NoError(t, leader.Resign(ctx(t)))
}

// Fencing tokens taken in a tight loop keep increasing through a failover
// to an asynchronous standby that never received the last tokens the old
// primary issued: the new primary's tokens start above the floor of its new
// timeline. pgcoord.fence_ok keeps working: after the failover a write
// guarded by the newest token lands and one guarded by a token from before
// does not. The coordinator runs as an application role with the grants
// the README lists, so the first token of the new timeline, which moves the
// sequence up, needs no more than those.
func TestTokensIncreaseAcrossFailover(t *testing.T) {
	t.Parallel()
	p := haPair(t)
	role := appRoleOn(t, p.Primary().URL(), "")
	caughtUp(t, p)
	conn := strings.Replace(multiHost("&target_session_attrs=read-write", p.Primary(), p.Standby()),
		"postgres://postgres@", "postgres://"+role+":app-pw@", 1)
	c := haCoord(t, conn, func(cfg *Config) { cfg.Fencing = true; cfg.Logger = keptLogger(t) })
	l := c.GetLock("tokens")

	lctx := ctx(t)
	var mu sync.Mutex
	var tokens []int64
	errs := map[string]int{} // Acquire's errors during the failover, by text
	failedOver := -1         // len(tokens) when the failover was over
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ok, err := l.Acquire(lctx, NoWait)
			if ok {
				tok := l.Token()
				if tok == 0 {
					// A hold taken on the old primary just before it
					// stopped, and lost (its session's EOF found) before
					// this look: Token is 0 once a hold is lost, and Lost
					// must say so. Its token protects nothing, and only
					// tokens of holds are compared.
					assert.True(t, isClosed(l.Lost()), "Token() is 0 for a hold not lost")
					_ = l.Release(lctx)
					continue
				}
				_ = l.Release(lctx) // may find the hold lost: the token was issued all the same
				mu.Lock()
				tokens = append(tokens, tok)
				enough := failedOver >= 0 && len(tokens) >= failedOver+100
				mu.Unlock()
				if enough {
					return
				}
				continue
			}
			if lctx.Err() != nil {
				return
			}
			if err != nil { // during the failover
				what := err.Error()
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Where != "" {
					what += " (where: " + pgErr.Where + ")"
				}
				mu.Lock()
				errs[what]++
				mu.Unlock()
			}
			time.Sleep(time.Millisecond)
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(tokens)
	}
	require.Eventually(t, func() bool { return count() >= 300 }, 30*time.Second, time.Millisecond)
	_, err := p.Failover()
	require.NoError(t, err)
	mu.Lock()
	failedOver = len(tokens)
	mu.Unlock()
	<-done

	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(tokens), failedOver+100, "tokens after the failover; Acquire's errors: %v", errs)
	for i := 1; i < len(tokens); i++ {
		require.Greater(t, tokens[i], tokens[i-1], "token %d of %d (the failover ended at %d)", i, len(tokens), failedOver)
	}
	// Which primary issued a token shows in its high bits (the timeline).
	promoted := 0
	for promoted < len(tokens) && tokens[promoted]>>48 == tokens[0]>>48 {
		promoted++
	}
	require.Less(t, promoted, len(tokens), "no token from the new primary's timeline")
	t.Logf("%d tokens from the old primary (timeline %d), up to %d; %d from the new one (timeline %d), from %d",
		promoted, tokens[0]>>48, tokens[promoted-1], len(tokens)-promoted, tokens[promoted]>>48, tokens[promoted])

	table := "fenced_" + randomSuffix()
	db := connect(t, p.Primary().URL())
	_, err = db.Exec(ctx(t), `CREATE TABLE `+table+` (id int PRIMARY KEY, v text); INSERT INTO `+table+` VALUES (1, 'init')`)
	require.NoError(t, err)
	mustAcquire(t, l, NoWait)
	write := func(token int64) int64 {
		tag, err := db.Exec(ctx(t), `UPDATE `+table+` SET v = $1 WHERE id = 1 AND pgcoord.fence_ok($2, $3)`, "w", l.Key(), token)
		require.NoError(t, err)
		return tag.RowsAffected()
	}
	require.EqualValues(t, 0, write(tokens[promoted-1]), "a token from the old primary is refused")
	require.EqualValues(t, 1, write(l.Token()), "the holder's write lands")
	require.NoError(t, l.Release(ctx(t)))
}

// After a failover, the control session never moves back to the old
// primary: here it is started again as a primary on its old timeline
// (what a node restarted by hand, or one whose Patroni died, looks like)
// and listed first. A reconnect of the control session reaches it first
// and is refused (ErrWrongServer) for as long as it runs, so the
// coordinator stays on the new primary's side: no session on the old one,
// no token below those it issued there. Once the old primary is gone the
// reconnect reaches the new one. Before, the reconnect moved the whole
// coordinator back to timeline 1: its holds on the new primary lost, new
// acquires granted on the old one with tokens of timeline 1.
func TestControlNeverBackToOlderTimeline(t *testing.T) {
	t.Parallel()
	p := haPair(t)
	old, standby := p.Primary(), p.Standby()
	c := haCoord(t, multiHost("&target_session_attrs=read-write", old, standby))
	caughtUp(t, p)
	newPrimary, err := p.Failover()
	require.NoError(t, err)
	b := c.GetLock("b")
	require.Eventually(t, func() bool { ok, _ := b.Acquire(ctx(t), NoWait); return ok }, 20*time.Second, 10*time.Millisecond,
		"no acquire on the new primary")
	id := *c.identity.Load()
	require.Equal(t, int32(2), id.timeline)
	issued := b.Token()
	require.NoError(t, old.StartServer()) // a primary again, on timeline 1

	var pid int32
	require.NoError(t, c.control.lock(ctx(t)))
	pid = c.control.backendPID
	c.control.unlock()
	var killed bool
	require.NoError(t, connect(t, newPrimary.URL()).QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, pid).Scan(&killed))
	require.True(t, killed)
	// The reconnect (backoff 20 ms to 500 ms) tries the old primary first,
	// again and again.
	d := c.GetLock("d")
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		require.Equal(t, id, *c.identity.Load(), "the control session moved back to the old primary")
		if ok, _ := d.Acquire(ctx(t), NoWait); ok {
			require.Greater(t, d.Token(), issued, "a token below one this coordinator issued")
			require.NoError(t, d.Release(ctx(t)))
		}
	}
	require.Zero(t, sessionsOn(t, old.URL(), c), "sessions on the old primary")

	require.NoError(t, old.StopImmediate())
	require.Eventually(t, c.IsActive, 10*time.Second, 10*time.Millisecond)
	mustAcquire(t, d, NoWait)
	require.Greater(t, d.Token(), issued)
	require.Equal(t, id, *c.identity.Load())
	require.NoError(t, d.Release(ctx(t)))
	require.NoError(t, b.Release(ctx(t)))
}
