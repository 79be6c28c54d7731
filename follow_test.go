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
