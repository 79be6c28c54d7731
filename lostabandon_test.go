package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An Acquire whose ctx ended while its try ran leaves the next Acquire a
// fresh Lost channel. The try it gave up on may have taken the lock, with a
// hold made on the channel then on show; that hold lives until the batch's
// leader gives the grant back, and is lost, closing the channel, if the
// session breaks first. Before, the next Acquire's hold was made on the
// same channel: it read lost at once when that happened, and its own loss
// later closed the channel a second time (a panic). The test makes the
// abandoned try certain (its statement blocks in nextval behind an open
// ALTER SEQUENCE, on a server of its own) and checks that the channels
// differ, for a Lock and for a Semaphore's slot.
func TestAbandonedTryKeepsItsLostChannel(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = srv.URL() })
	seq := connect(t, srv.URL())
	giveUp := func(acquire func(context.Context) (bool, error)) {
		t.Helper()
		_, err := seq.Exec(ctx(t), `BEGIN; ALTER SEQUENCE pgcoord.fencing_token CACHE 1`)
		require.NoError(t, err)
		short, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
		defer cancel()
		ok, err := acquire(short)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.False(t, ok)
		_, err = seq.Exec(ctx(t), `ROLLBACK`)
		require.NoError(t, err)
	}

	l := c.GetLock("x")
	mustAcquire(t, l, NoWait) // registers the name, opens the lock session
	require.NoError(t, l.Release(ctx(t)))
	before := l.Lost()
	giveUp(func(ctx context.Context) (bool, error) { return l.Acquire(ctx, NoWait) })
	mustAcquire(t, l, NoWait)
	require.True(t, l.Lost() != before, "the new hold's Lost channel is the given-up try's")
	require.False(t, isClosed(l.Lost()))
	require.NoError(t, l.Release(ctx(t)))

	s := c.Semaphore("sem", 1)
	ok, err := s.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Release(ctx(t)))
	before = s.Lost()
	giveUp(func(ctx context.Context) (bool, error) { return s.Acquire(ctx, NoWait) })
	ok, err = s.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, s.Lost() != before, "the new slot's Lost channel is the given-up try's")
	require.NoError(t, s.Release(ctx(t)))
}
