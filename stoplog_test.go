package pgcoord

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// A normal Stop with locks still held is not a loss to warn about: it logs
// at Info, and Lost() still closes.
func TestStopWithHeldLocksDoesNotWarn(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	a, b := c.GetLock("a"), c.GetLock("b")
	mustAcquire(t, a, NoWait)
	mustAcquire(t, b, NoWait)
	require.NoError(t, c.Stop(context.Background()))
	requireClosedWithin(t, a.Lost(), 0, "Lost() after Stop")
	requireClosedWithin(t, b.Lost(), 0, "Lost() after Stop")
	out := logs.String()
	require.NotContains(t, out, "level=WARN", "no warning for a normal Stop:\n%s", out)
	require.Contains(t, out, `level=INFO msg="pgcoord: locks released by Stop"`)
}
