package pgcoord

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// A holder whose lock session goes silent just after a statement on it
// succeeded (its backend stopped: a cut-off looks the same to the client)
// is told within two heartbeats of the cut, as for any other cut-off. The
// beat that comes within pingSkip of that statement skips the session's
// ping; the next beat's ping must then not be given a whole interval, or the
// holder is told up to an interval and a quarter after the cut plus the
// ping's interval: 2.2 heartbeats here, before the ping's deadline counted
// the skip.
func TestSkippedPingCutOffToldWithinTwoBeats(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	const hb = 2 * time.Second
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		cfg.HeartbeatInterval = hb
	})
	l := c.GetLock("held")
	mustAcquire(t, l, NoWait)
	s := l.hold.sess
	require.Equal(t, sessionLock, s.kind)

	// A beat's ping of the idle session: heard moves on to its send, at
	// the beat's tick.
	before := s.heard.Load()
	require.Eventually(t, func() bool { return s.heard.Load() != before }, 3*hb, time.Millisecond)
	beat := s.heard.Load()
	// A statement heard a fifth of an interval before the next beat, which
	// therefore skips the session's ping; then the session goes silent.
	time.Sleep(time.Duration(beat + int64(hb*4/5) - monoNow()))
	var pid int
	var cut time.Time
	require.NoError(t, s.do(ctx(t), func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			return err
		}
		pid = int(s.backendPID)
		cut = time.Now()
		return syscall.Kill(pid, syscall.SIGSTOP)
	}))
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()

	select {
	case <-l.Lost():
	case <-time.After(4 * hb):
		t.Fatal("the silent holder was never told")
	}
	told := time.Since(cut)
	t.Logf("told %v after the cut (heartbeat %v)", told, hb)
	require.Less(t, told, 2*hb+200*time.Millisecond, "told later than two heartbeats after the cut")
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
	const hb = 50 * time.Millisecond
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.HeartbeatInterval = hb })
	e := c.Election("starved")
	require.NoError(t, e.Campaign(ctx(t), "me"))
	require.True(t, e.IsLeader())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 256 {
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
