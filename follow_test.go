package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A failover faster than the control session notices it (a switchover, a
// promotion right after the primary died): the heartbeat finds its
// connection to the old primary broken only at its next beat, up to
// HeartbeatInterval later, and until then a lock session that reaches the
// new primary is refused ("the control session is on timeline 1"), dial
// after dial. The lock session that finds the newer timeline moves the
// control session there at once and waits for it, so the first Acquire
// comes right after the promotion, not at the next beat. The primary stops
// and the standby is promoted just after a beat, with a heartbeat of 10s:
// before the change the first acquire came about 9 s after the promotion.
func TestLockSessionMovesControlAfterFailover(t *testing.T) {
	t.Parallel()
	p := haPair(t)
	conn := multiHost("&target_session_attrs=read-write", p.Primary(), p.Standby())
	const hb = 10 * time.Second
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = conn
		cfg.HeartbeatInterval = hb
		cfg.SessionTimeout = 0
		cfg.InitialReconnectBackoff = 0
		cfg.MaxReconnectBackoff = 0
	})
	l := c.GetLock("moved")
	mustAcquire(t, l, NoWait) // the name is registered, as a service's are
	timeline := l.Token() >> 48
	require.NoError(t, l.Release(ctx(t)))

	// Just after a beat: the next one is a whole interval away.
	beat := c.lastBeat.Load()
	require.Eventually(t, func() bool { return c.lastBeat.Load() != beat }, hb+5*time.Second, 5*time.Millisecond)
	_, err := p.Failover()
	require.NoError(t, err)
	up := time.Now() // Failover returns once the new primary accepts writes

	actx, cancel := context.WithTimeout(ctx(t), hb+time.Minute)
	defer cancel()
	refusals := 0
	var last error
	for {
		ok, err := l.Acquire(actx, NoWait)
		if ok {
			break
		}
		if err == nil {
			err = errors.New("busy")
		}
		require.NoError(t, actx.Err(), "no acquire on the new primary (%d refused; last: %v)", refusals, last)
		refusals++
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(up)
	t.Logf("first acquire %v after the promotion (%d attempts refused, last: %v)", took.Round(time.Millisecond), refusals, last)
	require.Greater(t, l.Token()>>48, timeline, "the lock is taken on the new primary's timeline")
	require.NoError(t, l.Release(ctx(t)))
	require.Less(t, took, 2*time.Second, "the first acquire comes long before the next beat (%v after the one before the failover)", hb)
	require.True(t, c.IsActive(), "the control session is on the new primary")
}

// After a failover, a name this coordinator registered before it registers
// again on its next use, as docs/ha.md says: the new primary's registry
// may lack the row (an asynchronous standby's replay; here it is deleted
// by hand). Before, the name cache, which outlived the failover, skipped
// the registration for up to nameCacheTTL (10 minutes): held_locks showed
// the key with no name, and a colliding name went unrefused (found by a
// review helper).
func TestNamesRegisterAgainAfterFailover(t *testing.T) {
	t.Parallel()
	p := haPair(t)
	c := haCoord(t, multiHost("&target_session_attrs=read-write", p.Primary(), p.Standby()))
	l := c.GetLock("cached")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
	caughtUp(t, p)
	primary, err := p.Failover()
	require.NoError(t, err)
	// The coordinator follows: an acquire of another name succeeds on the
	// new primary.
	probe := c.GetLock("probe")
	require.Eventually(t, func() bool {
		ok, err := probe.Acquire(ctx(t), NoWait)
		if ok && err == nil {
			require.NoError(t, probe.Release(ctx(t)))
			return true
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "the coordinator follows the failover")
	admin := connect(t, primary.URL())
	tag, err := admin.Exec(ctx(t), `DELETE FROM pgcoord.locks WHERE key = $1`, l.Key())
	require.NoError(t, err)
	require.Equal(t, int64(1), tag.RowsAffected(), "the row was there, replayed")

	mustAcquire(t, l, NoWait)
	var n int
	require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.locks WHERE key = $1`, l.Key()).Scan(&n))
	require.Equal(t, 1, n, "the name registered again on the new primary")
	require.NoError(t, l.Release(ctx(t)))
}
