package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// TestDeadlockReaderBehindIdleWriter: member A reads k, then waits to
// write r; member C holds r and waits to read k; member B waits to write k
// and holds nothing. C's read queues behind B's writer (a reader does not
// overtake a waiting writer), B waits for A's read, A waits for C: a cycle
// of waits, although B, the writer in it, holds nothing. It must be broken
// within 2 s like any other (SPEC 8); a holdless wait was never published,
// so the reader appeared free and the three waited out their timeouts.
func TestDeadlockReaderBehindIdleWriter(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	// B waits beyond its budget: it holds k's writer intent while it waits,
	// so C's read queues behind it for certain.
	a, b, c := newCoord(t, p), newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 }), newCoord(t, p)
	const long = 8 * time.Second
	type result struct {
		who  string
		ok   bool
		err  error
		took time.Duration
	}
	out := make(chan result, 3)
	readK := a.GetLock("k")
	mustAcquireShared(t, readK, NoWait)

	writeK := b.GetLock("k")
	go func() {
		began := time.Now()
		ok, err := writeK.Acquire(ctx(t), Timeout(long))
		if ok {
			_ = writeK.Release(context.Background())
		}
		out <- result{who: "B writes k", ok: ok, err: err, took: time.Since(began)}
	}()
	// B's wait holds k's writer intent (a two-int advisory key).
	key := writeK.Key()
	intentHi, intentLo := int64(uint32(int32(key>>32)^1431655765)), int64(uint32(key))
	onK := func(granted bool) int {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = $1
			AND ((objsubid = 2 AND classid::bigint = $2 AND objid::bigint = $3)
			  OR (objsubid = 1 AND classid::bigint = $4 AND objid::bigint = $3))`,
			granted, intentHi, intentLo, int64(uint32(key>>32))).Scan(&n))
		return n
	}
	// Its first far wait (100 ms) drops the intent as it ends; the second,
	// with a ticket, holds it for as long as B waits.
	require.Eventually(t, func() bool { return b.stats.farPhases.Load() >= 2 && onK(true) >= 2 }, 10*time.Second, time.Millisecond,
		"B holds k's writer intent (beside A's shared hold of k) in its second far wait")

	holdR := c.GetLock("r")
	mustAcquire(t, holdR, NoWait)
	readKc := c.GetLock("k")
	go func() {
		began := time.Now()
		ok, err := readKc.AcquireShared(ctx(t), Timeout(long))
		if ok {
			_ = readKc.Release(context.Background())
		}
		_ = holdR.Release(context.Background())
		out <- result{who: "C reads k", ok: ok, err: err, took: time.Since(began)}
	}()
	// C's read waits, on the server (for the intent or k) or beyond its
	// budget.
	require.Eventually(t, func() bool { return onK(false) > 0 || c.Stats().WaitsBeyondBudget > 0 }, 10*time.Second, time.Millisecond,
		"C's read waits behind B")
	select {
	case r := <-out:
		t.Fatalf("%s ended before the cycle closed: %v %v", r.who, r.ok, r.err)
	default:
	}

	// A waits for r: the cycle closes.
	closed := time.Now()
	writeR := a.GetLock("r")
	go func() {
		ok, err := writeR.Acquire(ctx(t), Timeout(long))
		if ok {
			_ = writeR.Release(context.Background())
		}
		_ = readK.Release(context.Background())
		out <- result{who: "A writes r", ok: ok, err: err, took: time.Since(closed)}
	}()
	first := <-out
	ended := time.Since(closed)
	t.Logf("first to end: %s after %v: ok=%v err=%v", first.who, ended.Round(time.Millisecond), first.ok, first.err)
	require.ErrorIs(t, first.err, ErrDeadlock, "the cycle is broken by a deadlock error")
	require.Less(t, ended, 2*time.Second, "broken within 2 s of closing")
	for range 2 {
		r := <-out
		require.NoError(t, r.err, r.who)
		require.True(t, r.ok, "%s proceeds once the victim let go", r.who)
	}
}

// TestAcquireSharedTxAgainBesideWaitingWriter: a transaction that holds a
// name shared and takes it shared again is granted it at once (docs:
// PostgreSQL grants a transaction a lock it already holds), also while a
// coordinator's writer waits beyond its budget for the name. That writer
// holds the name's writer intent and waits for this very transaction: a
// second shared request that waits for the intent waits for itself (with
// Wait, for ever).
func TestAcquireSharedTxAgainBesideWaitingWriter(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	key := hash.Key(p + "vol")
	tx := beginTx(t, pool)
	ok, err := AcquireSharedTx(ctx(t), tx, p, "vol", NoWait)
	require.NoError(t, err)
	require.True(t, ok)

	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	l := c.GetLock("vol")
	got := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Timeout(10*time.Second))
		if err == nil && !ok {
			err = errors.New("the writer timed out")
		}
		if ok {
			err = l.Release(context.Background())
		}
		got <- err
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `
			SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted
			  AND classid::bigint = ((($1::bigint >> 32)::integer # 1431655765)::bigint & 4294967295)
			  AND objid::bigint = ($1::bigint & 4294967295)`, key).Scan(&n))
		// Its first far wait (100 ms) drops the intent as it ends; the
		// second, with a ticket, holds it for as long as it waits.
		return n == 1 && c.stats.farPhases.Load() >= 2
	}, 5*time.Second, 10*time.Millisecond, "the writer waits beyond its budget, holding the intent")

	ok, err = AcquireSharedTx(ctx(t), tx, p, "vol", NoWait)
	require.NoError(t, err)
	require.True(t, ok, "NoWait: the transaction holds the name shared already")
	start := time.Now()
	ok, err = AcquireSharedTx(ctx(t), tx, p, "vol", Timeout(time.Second))
	require.NoError(t, err)
	require.True(t, ok, "Timeout: the transaction holds the name shared already")
	require.Less(t, time.Since(start), 500*time.Millisecond, "granted at once")
	requireUsable(t, tx)
	require.NoError(t, tx.Commit(ctx(t)))
	require.NoError(t, <-got)
}
