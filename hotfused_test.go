package pgcoord

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/db"
)

// UnlockTry is Unlock and then TryLock: released says whether the
// session held the unlock's key, token is the try's (0 when busy).
func TestUnlockTryStatement(t *testing.T) {
	t.Parallel()
	ctx := ctx(t)
	conn, other := connect(t, testURL), connect(t, testURL)
	q := db.New()
	k1, k2 := int64(0x407_f0_01), int64(0x407_f0_02)

	held := func(c *pgx.Conn, key int64) int {
		var n int
		require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
			AND pid = pg_backend_pid() AND granted AND ((classid::bigint << 32) | objid::bigint) = $1`, key).Scan(&n))
		return n
	}
	tok, err := q.TryLock(ctx, conn, k1)
	require.NoError(t, err)
	require.Positive(t, tok)
	row, err := q.UnlockTry(ctx, conn, db.UnlockTryParams{UnlockKey: k1, TryKey: k2})
	require.NoError(t, err)
	require.True(t, row.Released)
	require.Greater(t, row.Token, tok)
	require.Zero(t, held(conn, k1))
	require.Equal(t, 1, held(conn, k2))

	// The same key: its hold is released and taken again, held once.
	row, err = q.UnlockTry(ctx, conn, db.UnlockTryParams{UnlockKey: k2, TryKey: k2})
	require.NoError(t, err)
	require.True(t, row.Released)
	require.Positive(t, row.Token)
	require.Equal(t, 1, held(conn, k2))

	// Not held, and busy elsewhere.
	_, err = other.Exec(ctx, "SELECT pg_advisory_lock($1)", k1)
	require.NoError(t, err)
	row, err = q.UnlockTry(ctx, conn, db.UnlockTryParams{UnlockKey: k1, TryKey: k1})
	require.NoError(t, err)
	require.False(t, row.Released)
	require.Zero(t, row.Token)
	require.Zero(t, held(conn, k1))
}

// Under AsyncRelease every cycle's unlock and next try go as one
// statement on the hot path, with the batch's results: tokens increase,
// the name is held after each Acquire and free once its unlock ran.
func TestAsyncCycleFused(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.AsyncRelease = true })
	other := newCoord(t, p)
	l, o := c.GetLock("fused"), other.GetLock("fused")
	var last int64
	for i := range 50 {
		mustAcquire(t, l, NoWait)
		require.Greater(t, l.Token(), last)
		last = l.Token()
		if i%10 == 0 {
			ok, err := o.Acquire(ctx(t), NoWait)
			require.NoError(t, err)
			require.False(t, ok, "held after Acquire")
		}
		require.NoError(t, l.Release(ctx(t)))
	}
	require.True(t, hotPrepared(c.lockSession(l.key), hotUnlockTry), "the cycles ran UnlockTry")
	require.Zero(t, c.Stats().Lost)
}

// A fused statement that fails after its try took the lock (the fencing
// sequence at its maximum: nextval fails once pg_try_advisory_lock has
// run), on a connection that stays open: the released hold (another name,
// on the same lock session) is not reported lost although its unlock ran
// in the failed statement, the failed Acquire leaves nothing held on the
// server, and once the sequence has room both names are taken and
// released as usual.
func TestFusedFailureLeavesNothingHeld(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		cfg.AsyncRelease = true
	})
	admin := connect(t, srv.URL())
	a, b := c.GetLock("fused-a"), c.GetLock("fused-b")
	s := c.lockSession(a.key)
	require.Same(t, s, c.lockSession(b.key), "one lock session by default")
	mustAcquire(t, a, NoWait)
	_, err := admin.Exec(ctx(t), `DO $$ BEGIN
		EXECUTE format('ALTER SEQUENCE pgcoord.fencing_token MAXVALUE %s', (SELECT last_value FROM pgcoord.fencing_token));
	END $$`)
	require.NoError(t, err)
	// The session held meanwhile, a's queued unlock and b's try go in one
	// batch, whether the unlock's flush or the try leads it.
	s.sem <- struct{}{}
	require.NoError(t, a.Release(ctx(t)))
	got := make(chan error, 1)
	go func() {
		ok, err := b.Acquire(ctx(t), NoWait)
		if ok {
			err = errors.New("acquired with the sequence at its maximum")
		}
		got <- err
	}()
	require.Eventually(t, func() bool {
		s.bmu.Lock()
		defer s.bmu.Unlock()
		return len(s.batch.queue) == 2
	}, 5*time.Second, time.Millisecond)
	<-s.sem
	require.Error(t, <-got)
	require.Zero(t, serverLocksOf(t, srv.URL(), c.MemberID()), "nothing held for nobody")
	require.Zero(t, c.Stats().Lost, "a's unlock ran: a was released, not lost")
	s.sem <- struct{}{}
	stale, open := s.hot.stale[hotUnlockTry], s.conn != nil && !s.conn.IsClosed()
	<-s.sem
	require.True(t, stale, "the fused statement failed")
	require.True(t, open, "on a connection that stayed open")

	_, err = admin.Exec(ctx(t), `ALTER SEQUENCE pgcoord.fencing_token NO MAXVALUE`)
	require.NoError(t, err)
	for _, l := range []*Lock{a, b, a} { // fused again, on the statement prepared anew
		mustAcquire(t, l, NoWait)
		require.NoError(t, l.Release(ctx(t)))
	}
	require.Zero(t, c.Stats().Lost)
}
