package pgcoord

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatcherReadFailureIsLogged: an observer whose reads fail (here a role
// without SELECT on pgcoord.leaders) said nothing: its channel stayed
// empty and no line was logged. The first failure of a run is a warning,
// once however many heartbeats it lasts, and the read that ends it is
// logged too, and sends. The heartbeat is shortened because the retries
// come at heartbeats.
func TestWatcherReadFailureIsLogged(t *testing.T) {
	t.Parallel()
	role := appRole(t, "")
	logs := new(lockedBuffer)
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = withUser(t, testURL, role, "app-pw")
		cfg.HeartbeatInterval = 200 * time.Millisecond
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	obs := c.Election("e").Observe(ctx(t))
	failed := func() int { return strings.Count(logs.String(), "read failed") }
	require.Eventually(t, func() bool { return failed() > 0 }, 5*time.Second, 10*time.Millisecond,
		"a failing read is logged")
	require.Contains(t, logs.String(), `observer of election`)
	require.Contains(t, logs.String(), "42501", "the server's error is in the line")
	time.Sleep(5 * c.cfg.HeartbeatInterval) // five more failed reads
	require.Equal(t, 1, failed(), "one line for the run of failures:\n%s", logs.String())
	select {
	case l, ok := <-obs:
		t.Fatalf("the observer sent %+v (open %v) without reading", l, ok)
	default:
	}

	_, err := connect(t, testURL).Exec(ctx(t), `GRANT SELECT ON pgcoord.leaders TO `+role)
	require.NoError(t, err)
	select {
	case l := <-obs:
		require.Equal(t, Leader{}, l, "no leader")
	case <-time.After(5 * time.Second):
		t.Fatal("the observer did not read once it could")
	}
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "reading again") }, time.Second, 10*time.Millisecond)
	require.Equal(t, 1, failed())
}
