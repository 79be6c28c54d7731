package pgcoord

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A session cut off just after a statement is told within two heartbeats
// of the cut: the beat that comes within pingSkip of that statement skips
// the session's ping, and the next beat's ping (an interval later, or
// later) is given only until two intervals after the session was heard,
// and at least an interval less pingSkip; otherwise a whole interval.
func TestPingBoundAfterSkippedBeat(t *testing.T) {
	const interval = 2 * time.Second
	skip := interval / 4
	for _, tc := range []struct {
		sinceHeard, want time.Duration
	}{
		{interval / 2, interval}, // heard since the last beat
		{interval, interval},     // heard at the last beat
		{interval + time.Millisecond, interval - time.Millisecond},
		{interval + interval/10, interval - interval/10}, // skipped: heard just before the last beat
		{interval + skip - time.Millisecond, interval - skip + time.Millisecond},
		{interval + skip, interval}, // heard while busy at the last beat
		{3 * interval, interval},    // a late beat
	} {
		got := pingBound(tc.sinceHeard, interval, skip)
		require.Equal(t, tc.want, got, "heard %v ago", tc.sinceHeard)
		if tc.sinceHeard > interval && tc.sinceHeard < interval+skip {
			require.LessOrEqual(t, tc.sinceHeard+got, 2*interval, "told within two heartbeats of the last statement")
		}
		require.GreaterOrEqual(t, got, interval-skip, "a ping keeps at least an interval less pingSkip")
	}
}

// A leader whose application reads the election's leader from many
// goroutines at once (each read a control statement) keeps its term: the
// control session is alive and answering, and the heartbeat must get its
// turn on it. It queued behind every statement submitted before it, gave up
// after an interval, and queued again at the back at the next beat, so with
// a queue longer than an interval it never ran: IsActive went false and the
// leader lost its term at the lease.
func TestControlQueueDoesNotStarveHeartbeat(t *testing.T) {
	t.Parallel()
	// 1024 readers queue more than an interval of statements ahead of a
	// beat (each a round trip), most of them blocked, not spinning.
	const hb = 250 * time.Millisecond
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.HeartbeatInterval = hb })
	e := c.Election("starved")
	require.NoError(t, e.Campaign(ctx(t), "me"))
	require.True(t, e.IsLeader())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 1024 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = e.Leader(ctx(t))
			}
		}()
	}
	inactive := 0
	deadline := time.Now().Add(3 * c.cfg.SessionTimeout)
	for time.Now().Before(deadline) && e.IsLeader() {
		if !c.IsActive() {
			inactive++
		}
		time.Sleep(hb / 2)
	}
	close(stop)
	wg.Wait()
	t.Logf("IsActive false at %d looks; leader at the end: %v; heartbeat age %v", inactive, e.IsLeader(), c.Stats().HeartbeatAge)
	require.True(t, e.IsLeader(), "the leader lost its term to a busy control session")
	require.Zero(t, inactive, "IsActive false while the control session answered")
}
