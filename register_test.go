package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A name registered within the minute is only read when another
// coordinator registers it: no write and no row lock, so a fleet's
// coordinators registering the same names at start do not queue on each
// other's row locks. A transaction holding the row stands in for them.
func TestFreshRegistrationOnlyReads(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	first := newCoord(t, p).GetLock("registered")
	mustAcquire(t, first, NoWait)
	require.NoError(t, first.Release(ctx(t)))

	conn := connect(t, testURL)
	var xmin string
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT xmin::text FROM pgcoord.locks WHERE key = $1`, first.Key()).Scan(&xmin))
	tx, err := conn.Begin(ctx(t))
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(ctx(t), `SELECT 1 FROM pgcoord.locks WHERE key = $1 FOR UPDATE`, first.Key())
	require.NoError(t, err)

	// Registering takes a row lock only to write: it waits for the
	// transaction (a control statement refused by lock_timeout is run again
	// for as long as ctx allows) and this ctx ends first.
	second := newCoord(t, p).GetLock("registered")
	actx, cancel := context.WithTimeout(ctx(t), 3*time.Second)
	defer cancel()
	ok, err := second.Acquire(actx, NoWait)
	require.NoError(t, err, "a fresh registration waited for a row lock")
	require.True(t, ok)
	require.NoError(t, second.Release(ctx(t)))
	require.NoError(t, tx.Rollback(ctx(t)))

	var after string
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT xmin::text FROM pgcoord.locks WHERE key = $1`, first.Key()).Scan(&after))
	require.Equal(t, xmin, after, "a fresh registration wrote the row")
}
