package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestAbandonedGrantUndoneFirst: a try given up while its batch runs
// (runTry's abandon) may take its key, and that grant is given back by the
// batch's leader. The name's next try in this process can be queued before
// then (the abandoned caller's claim is freed at once), and a try whose
// batch fails on another statement is run again after unlocking its key
// until the server reports it free (undoTry: it may have taken it before
// failing). Before the fix the leader handed on the lead first and queued
// the undo after it, so the next try's rerun also freed the abandoned
// grant's level, took the key again, and the queued undo then freed it:
// Acquire returned true while the server held nothing.
//
// The test makes that order certain. The lock session's try of the name
// blocks in nextval (an open ALTER SEQUENCE holds the fencing sequence),
// after pg_try_advisory_lock has taken the key; its caller gives up. Tries
// of other names, then the name's next try, queue behind it; the server's
// lock table is filled, so that the other names' tries fail with 53200
// (the rerun's case) while the name's retake reuses the entry its own
// unlock freed; then the sequence is let go.
func TestAbandonedGrantUndoneFirst(t *testing.T) {
	t.Parallel()
	// A small lock table, as TestBatchStatementFailure's.
	srv := ownServer(t, map[string]string{"max_locks_per_transaction": "10", "max_connections": "20"})
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		// The heartbeat writes, and a write takes a lock-table entry for
		// its transaction id: one between the fill and the check would
		// take the entry the test is about.
		cfg.HeartbeatInterval = 10 * time.Second
		cfg.SessionTimeout = 60 * time.Second
	})
	l := c.GetLock("k")
	others := make([]*Lock, 10)
	for i := range others {
		others[i] = c.GetLock(fmt.Sprintf("x%d", i))
	}
	// Register every name and open the lock session before the table
	// fills (a registration writes).
	for _, o := range append([]*Lock{l}, others...) {
		mustAcquire(t, o, NoWait)
		require.NoError(t, o.Release(ctx(t)))
	}
	s := c.lockSession(l.key)
	queued := func() int {
		s.bmu.Lock()
		defer s.bmu.Unlock()
		return len(s.batch.queue)
	}

	admin := connect(t, srv.URL())
	filler := connect(t, srv.URL())
	seq := connect(t, srv.URL())
	_, err := seq.Exec(ctx(t), `BEGIN; ALTER SEQUENCE pgcoord.fencing_token CACHE 1`)
	require.NoError(t, err)

	// The first try: granted, then stuck in nextval; its caller gives up.
	// (Long enough for the try to be sent on a loaded machine: given up
	// before, it would be taken off the queue, not abandoned in flight.)
	short, cancel := context.WithTimeout(ctx(t), time.Second)
	defer cancel()
	ok, err := l.Acquire(short, NoWait)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, ok)
	var waiting bool
	require.NoError(t, admin.QueryRow(ctx(t), `SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted)`, s.backendPID).Scan(&waiting))
	require.True(t, waiting, "the lock session's try waits for the sequence")

	// The lock table full: a try of a new key fails.
	_, err = filler.Exec(ctx(t), `SELECT count(pg_try_advisory_lock(k)) FROM generate_series(1000000000, 1000100000) k`)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr) && pgErr.Code == "53200", "the lock table never filled: %v", err)
	var n int
	require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pg_locks WHERE pid = $1`, filler.PgConn().PID()).Scan(&n))
	t.Logf("filler holds %d", n)

	// Tries of the other names, then the name's next try, queue behind
	// the stuck batch, in that order.
	var wg sync.WaitGroup
	for i, o := range others {
		wg.Go(func() {
			ok, err := o.Acquire(ctx(t), NoWait)
			t.Logf("%s: %v, %v", o.Name(), ok, err)
		})
		require.Eventually(t, func() bool { return queued() == i+1 }, 10*time.Second, time.Millisecond)
	}
	type result struct {
		ok  bool
		err error
	}
	got := make(chan result, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), NoWait)
		got <- result{ok, err}
	}()
	require.Eventually(t, func() bool { return queued() == len(others)+1 }, 10*time.Second, time.Millisecond)

	_, err = seq.Exec(ctx(t), `ROLLBACK`)
	require.NoError(t, err)
	r := <-got
	wg.Wait()
	_, err = filler.Exec(ctx(t), `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)
	t.Logf("the name's next try: %v, %v", r.ok, r.err)
	if r.err == nil {
		require.True(t, r.ok)
		var took bool
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&took))
		require.False(t, took, "Acquire returned true, yet the server held nothing for it")
		require.NoError(t, l.Release(ctx(t)))
	} else {
		require.ErrorIs(t, r.err, ErrLockTableFull)
	}
	for _, o := range others {
		if err := o.Release(ctx(t)); !errors.Is(err, ErrNotHeld) {
			require.NoError(t, err)
		}
	}
	require.Eventually(t, func() bool { return serverLocksOf(t, srv.URL(), c.MemberID()) == 0 }, 10*time.Second, 10*time.Millisecond,
		"a level of the name outlived every hold")
}
