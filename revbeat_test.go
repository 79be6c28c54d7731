package pgcoord

import (
	"context"
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
