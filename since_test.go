package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// sinceOf returns held_locks.since of key's holder (granted) or waiter.
// A waiter is out of the server's lock queue for a moment between two of
// its slices (longer on a loaded machine, where the step's round trips
// wait for a time slice), so its row is looked for until it shows.
func sinceOf(t *testing.T, key int64, granted bool) time.Time {
	t.Helper()
	var since time.Time
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = testPool.QueryRow(ctx(t),
			`SELECT since FROM pgcoord.held_locks WHERE key = $1 AND granted = $2`, key, granted).Scan(&since)
		if granted || !errors.Is(err, pgx.ErrNoRows) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, err)
	return since
}

// requireWithin fails unless got lies in [from-slack, to+slack].
func requireWithin(t *testing.T, got, from, to time.Time, what string) {
	t.Helper()
	const slack = 5 * time.Millisecond // the clocks are the same machine's
	require.Truef(t, !got.Before(from.Add(-slack)) && !got.After(to.Add(slack)),
		"%s: %s is not within [%s, %s]", what, got.Format(time.StampMicro), from.Format(time.StampMicro), to.Format(time.StampMicro))
}

// held_locks.since is when a hold began, however many heartbeats pass, and
// for a waiter when its wait began, not its current one-second slice.
func TestHeldLocksSince(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c1, c2 := newCoord(t, p), newCoord(t, p)

	l := c1.GetLock("held")
	before := time.Now()
	mustAcquire(t, l, NoWait)
	after := time.Now()
	// Through three heartbeats (500ms): each moves the session's
	// state_change, which is all pg_locks and pg_stat_activity offer.
	time.Sleep(1600 * time.Millisecond)
	requireWithin(t, sinceOf(t, l.Key(), true), before, after, "a hold's since")

	w := c2.GetLock("held")
	res := make(chan error, 1)
	waitBefore := time.Now()
	go func() {
		ok, err := w.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = ErrLockAcquireFailed
		}
		res <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, time.Millisecond)
	waitAfter := time.Now()
	time.Sleep(2300 * time.Millisecond) // past two one-second slices
	requireWithin(t, sinceOf(t, w.Key(), false), waitBefore, waitAfter, "a waiter's since")
	requireWithin(t, sinceOf(t, l.Key(), true), before, after, "the hold's since, with a waiter")

	releasedBefore := time.Now()
	require.NoError(t, l.Release(ctx(t)))
	require.NoError(t, <-res)
	grantedAfter := time.Now()
	time.Sleep(1600 * time.Millisecond)
	requireWithin(t, sinceOf(t, w.Key(), true), releasedBefore, grantedAfter, "a hold's since after a wait")
	require.NoError(t, w.Release(ctx(t)))
}

// Short holds cost no write: an acquire and release loop leaves nothing in
// pgcoord.lock_since.
func TestShortHoldsWriteNothing(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("short")
	for range 50 {
		mustAcquire(t, l, NoWait)
		require.NoError(t, l.Release(ctx(t)))
	}
	time.Sleep(3 * sinceRecordAfter)
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.lock_since WHERE key = $1`, l.Key()).Scan(&n))
	require.Zero(t, n)
}

// Two shared holds of one key on one session share a held_locks row: its
// since stays the first's while the first lives, though the second was
// recorded a flush later. Before, the second's record overwrote it (found
// by a review helper).
func TestSinceKeepsEarliestSharedStart(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	first, second := c.GetLock("shared-since"), c.GetLock("shared-since")
	before := time.Now()
	mustAcquireShared(t, first, NoWait)
	after := time.Now()
	time.Sleep(4 * sinceRecordAfter) // the first's start recorded
	mustAcquireShared(t, second, NoWait)
	require.Equal(t, c.lockSession(first.Key()), c.lockSession(second.Key()))
	time.Sleep(4 * sinceRecordAfter) // the second's too, a flush later
	requireWithin(t, sinceOf(t, first.Key(), true), before, after, "the row's since, with both holds")
	require.NoError(t, first.Release(ctx(t)))
	require.NoError(t, second.Release(ctx(t)))
}

// A hold's lock_since row goes once the hold has ended, even when the
// control session was busy for longer than the flush's 5 s bound while
// the row was being recorded. Before, the flush gave up with its
// statement still queued for the session; the statement inserted the row
// later, after the hold had ended, and nothing deleted it: later short
// holds of the key on that session showed its stale since (found by a
// review helper).
func TestSinceRowOfEndedHoldGoes(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil) // awaitSleep looks at the whole server
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		// A lease far longer than the control session's busy spell.
		cfg.HeartbeatInterval = 2 * time.Second
		cfg.SessionTimeout = 20 * time.Second
	})
	admin := connect(t, srv.URL())
	l := c.GetLock("late-since")
	mustAcquire(t, l, NoWait) // registered: the acquire below needs no control statement
	require.NoError(t, l.Release(ctx(t)))

	busy := make(chan error, 1)
	go func() {
		busy <- c.control.do(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `SELECT pg_sleep(6.5)`)
			return err
		})
	}()
	awaitSleep(t, admin, "the control session is busy")
	mustAcquire(t, l, NoWait)
	// The hold ends while the flush that found it still waits for the
	// session, which stays busy past that flush's 5 s.
	time.Sleep(2 * time.Second)
	require.NoError(t, l.Release(ctx(t)))
	require.NoError(t, <-busy)

	rows := func() int {
		var n int
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.lock_since WHERE key = $1`, l.Key()).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return rows() == 0 }, 3*time.Second, 10*time.Millisecond,
		"the ended hold's row stays")
	time.Sleep(500 * time.Millisecond) // and no late statement writes it again
	require.Zero(t, rows())
}
