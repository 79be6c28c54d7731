package pgcoord

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// Synchronized and Synchronize given a nil function panic with a message
// that says so, before any lock is taken or any name registered: before,
// the locks were taken, the name written to the registry, and only the
// call of nil panicked.
func TestSynchronizedNilFunc(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	require.PanicsWithValue(t, "pgcoord: Synchronized given a nil function", func() {
		_ = Synchronized(ctx(t), "nil-fn", nil, nil, WithCoordinator(c))
	})
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.locks WHERE name = $1`, p+"nil-fn").Scan(&n))
	require.Zero(t, n, "the name was registered: a lock was taken")

	require.PanicsWithValue(t, "pgcoord: Synchronize given a nil function", func() {
		Synchronize[struct{}]("nil-fn", (func(context.Context, struct{}) error)(nil), WithCoordinator(c))
	})
}
