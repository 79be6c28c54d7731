package pgcoord

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// txPool returns a pool of its own for a test's transactions (the shared
// testPool has a handful of connections, and each open transaction keeps
// one), closed when the test ends.
func txPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testURL)
	require.NoError(t, err)
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// beginTx begins a transaction on its own connection from pool, rolled
// back when the test ends if still open.
func beginTx(t testing.TB, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(ctx(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

func mustTryTx(t testing.TB, tx pgx.Tx, prefix, name string, b Blocking) bool {
	t.Helper()
	ok, err := AcquireTx(ctx(t), tx, prefix, name, b)
	require.NoError(t, err)
	return ok
}

// requireUsable runs a statement in tx: it fails if tx was aborted.
func requireUsable(t testing.TB, tx pgx.Tx) {
	t.Helper()
	var one int
	require.NoError(t, tx.QueryRow(ctx(t), `SELECT 1`).Scan(&one), "the transaction is still usable")
}

func TestAcquireTxNoWait(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	a, b := beginTx(t, pool), beginTx(t, pool)
	require.True(t, mustTryTx(t, a, p, "vol", NoWait))
	require.False(t, mustTryTx(t, b, p, "vol", NoWait), "busy while another transaction holds it")
	requireUsable(t, b)
	require.True(t, mustTryTx(t, b, p, "other", NoWait), "names are independent")
	require.True(t, mustTryTx(t, a, "another prefix/", "vol", NoWait), "prefixes are independent")
	require.NoError(t, a.Commit(ctx(t)))
	require.True(t, mustTryTx(t, b, p, "vol", NoWait), "free once the holder committed")
	require.NoError(t, b.Rollback(ctx(t)))
	c := beginTx(t, pool)
	require.True(t, mustTryTx(t, c, p, "vol", NoWait), "free once the holder rolled back")
}

func TestAcquireTxBadInput(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	tx := beginTx(t, pool)
	for _, tc := range []struct {
		what, prefix, name string
	}{
		{"empty name", "p/", ""},
		{"too long", "p/", strings.Repeat("x", MaxNameLen)},
		{"not UTF-8", "p/", "\xc3\x28"},
		{"NUL", "p/", "a\x00b"},
		{"NUL in prefix", "p\x00/", "a"},
	} {
		_, err := AcquireTx(ctx(t), tx, tc.prefix, tc.name, NoWait)
		require.ErrorIs(t, err, ErrInvalidName, tc.what)
		_, err = AcquireSharedTx(ctx(t), tx, tc.prefix, tc.name, NoWait)
		require.ErrorIs(t, err, ErrInvalidName, tc.what)
		_, err = AcquireFencedTx(ctx(t), tx, tc.prefix, tc.name, NoWait)
		require.ErrorIs(t, err, ErrInvalidName, tc.what)
	}
	requireUsable(t, tx)
	_, err := AcquireTx(ctx(t), nil, "p/", "a", NoWait)
	require.ErrorIs(t, err, ErrNoTransaction)
	_, err = AcquireSharedTx(ctx(t), nil, "p/", "a", Wait)
	require.ErrorIs(t, err, ErrNoTransaction)
	_, err = AcquireFencedTx(ctx(t), nil, "p/", "a", Wait)
	require.ErrorIs(t, err, ErrNoTransaction)
	_, err = FenceTx(ctx(t), nil, "p/", "a", 1)
	require.ErrorIs(t, err, ErrNoTransaction)
}

// A Timeout that runs out leaves the caller's transaction usable: its
// earlier work commits, and its own lock_timeout is what it was. A Timeout
// returns as soon as the lock frees up.
func TestAcquireTxTimeout(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	table := "txlock_" + randomSuffix()
	_, err := testPool.Exec(ctx(t), `CREATE TABLE `+table+` (v text)`)
	require.NoError(t, err)
	defer testPool.Exec(context.Background(), `DROP TABLE `+table)

	holder, waiter := beginTx(t, pool), beginTx(t, pool)
	require.True(t, mustTryTx(t, holder, p, "vol", NoWait))
	_, err = waiter.Exec(ctx(t), `SET LOCAL lock_timeout = '123ms'`)
	require.NoError(t, err)
	_, err = waiter.Exec(ctx(t), `INSERT INTO `+table+` VALUES ('before the wait')`)
	require.NoError(t, err)
	start := time.Now()
	require.False(t, mustTryTx(t, waiter, p, "vol", Timeout(400*time.Millisecond)))
	waited := time.Since(start)
	require.GreaterOrEqual(t, waited, 390*time.Millisecond, "waited the whole timeout, not the caller's lock_timeout")
	require.Less(t, waited, 5*time.Second)
	var lockTimeout string
	require.NoError(t, waiter.QueryRow(ctx(t), `SELECT current_setting('lock_timeout')`).Scan(&lockTimeout))
	require.Equal(t, "123ms", lockTimeout, "the caller's lock_timeout is untouched")
	_, err = waiter.Exec(ctx(t), `INSERT INTO `+table+` VALUES ('after the wait')`)
	require.NoError(t, err)
	require.NoError(t, waiter.Commit(ctx(t)))
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM `+table).Scan(&n))
	require.Equal(t, 2, n, "the transaction that timed out committed its work")

	// Freed during the wait: acquired then, not at the timeout.
	waiter2 := beginTx(t, pool)
	got := make(chan error, 1)
	go func() {
		ok, err := AcquireTx(ctx(t), waiter2, p, "vol", Timeout(time.Minute))
		if err == nil && !ok {
			err = errors.New("timed out")
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return serverWaiters(t, hash.Key(p+"vol")) == 1 }, 10*time.Second, 5*time.Millisecond)
	freed := time.Now()
	require.NoError(t, holder.Commit(ctx(t)))
	require.NoError(t, <-got)
	require.Less(t, time.Since(freed), 5*time.Second)
	requireUsable(t, waiter2)
}

// The lock goes with its transaction: a statement error elsewhere in the
// transaction releases it at once (PostgreSQL aborts the transaction and
// frees its locks before the client's ROLLBACK), and a rolled-back nested
// transaction (a savepoint) releases a lock taken inside it.
func TestAcquireTxReleasedWithTransaction(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	a, b := beginTx(t, pool), beginTx(t, pool)
	require.True(t, mustTryTx(t, a, p, "vol", NoWait))
	require.False(t, mustTryTx(t, b, p, "vol", NoWait))
	_, err := a.Exec(ctx(t), `SELECT 1/0`)
	require.Error(t, err)
	require.True(t, mustTryTx(t, b, p, "vol", NoWait), "a's failed statement released the lock")
	_, err = AcquireTx(ctx(t), a, p, "again", NoWait)
	require.Error(t, err, "a is aborted")
	require.NoError(t, b.Rollback(ctx(t)))

	outer := beginTx(t, pool)
	nested, err := outer.Begin(ctx(t))
	require.NoError(t, err)
	require.True(t, mustTryTx(t, nested, p, "nested", NoWait))
	other := beginTx(t, pool)
	require.False(t, mustTryTx(t, other, p, "nested", NoWait))
	require.NoError(t, nested.Rollback(ctx(t)))
	require.True(t, mustTryTx(t, other, p, "nested", NoWait), "rolling back the savepoint released it")
	requireUsable(t, outer)
}

// Wait waits until ctx ends; the statement is interrupted and the error
// says so.
func TestAcquireTxWaitCancelled(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	holder := beginTx(t, pool)
	require.True(t, mustTryTx(t, holder, p, "vol", NoWait))
	waiter := beginTx(t, pool)
	wctx, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	ok, err := AcquireTx(wctx, waiter, p, "vol", Wait)
	require.False(t, ok)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "roll the transaction back")
	require.Less(t, time.Since(start), 5*time.Second)
	require.NoError(t, holder.Commit(ctx(t)))
	// The interrupted waiter's backend leaves the queue when the server
	// notices its client is gone.
	require.Eventually(t, func() bool {
		tx := beginTx(t, pool)
		defer tx.Rollback(context.Background())
		return mustTryTx(t, tx, p, "vol", NoWait)
	}, 10*time.Second, 20*time.Millisecond)
}

// A transaction lock and a Coordinator's session lock of one name exclude
// each other, both ways, exclusive and shared.
func TestAcquireTxExcludesCoordinator(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	c := newCoord(t, p)
	l := c.GetLock("vol")
	require.Equal(t, hash.Key(p+"vol"), l.Key())

	mustAcquire(t, l, NoWait)
	tx := beginTx(t, pool)
	require.False(t, mustTryTx(t, tx, p, "vol", NoWait), "the coordinator's hold excludes the transaction")
	ok, err := AcquireSharedTx(ctx(t), tx, p, "vol", Timeout(100*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok, "shared too")
	require.NoError(t, l.Release(ctx(t)))
	require.True(t, mustTryTx(t, tx, p, "vol", NoWait))
	requireBusy(t, c.GetLock("vol"))
	ok, err = c.GetLock("vol").AcquireShared(ctx(t), NoWait)
	require.NoError(t, err)
	require.False(t, ok, "a transaction's exclusive lock excludes a shared holder")
	require.NoError(t, tx.Commit(ctx(t)))
	l = c.GetLock("vol")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	// Shared: readers of both kinds together, no writer of either kind.
	r := c.GetLock("vol")
	mustAcquireShared(t, r, NoWait)
	tx1, tx2 := beginTx(t, pool), beginTx(t, pool)
	ok, err = AcquireSharedTx(ctx(t), tx1, p, "vol", NoWait)
	require.NoError(t, err)
	require.True(t, ok, "shared with a coordinator's shared hold")
	ok, err = AcquireSharedTx(ctx(t), tx2, p, "vol", NoWait)
	require.NoError(t, err)
	require.True(t, ok, "shared with another transaction's shared hold")
	require.False(t, mustTryTx(t, beginTx(t, pool), p, "vol", NoWait), "no exclusive transaction lock among readers")
	require.NoError(t, r.Release(ctx(t)))
	requireBusy(t, c.GetLock("vol"))
	require.NoError(t, tx1.Commit(ctx(t)))
	require.NoError(t, tx2.Commit(ctx(t)))
	mustAcquire(t, c.GetLock("vol"), NoWait)
}

// A shared transaction lock holds off while a coordinator's writer waits
// beyond its session budget (it holds the name's writer intent), and the
// intent it looks at is not kept to the end of its transaction.
func TestAcquireSharedTxRespectsWriterIntent(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	key := hash.Key(p + "vol")
	intent := func(conn *pgx.Conn, take bool) bool {
		var ok bool
		q := `SELECT pg_try_advisory_lock((($1::bigint >> 32)::integer # 1431655765), $1::bigint::bit(32)::integer)`
		if !take {
			q = `SELECT pg_advisory_unlock((($1::bigint >> 32)::integer # 1431655765), $1::bigint::bit(32)::integer)`
		}
		require.NoError(t, conn.QueryRow(ctx(t), q, key).Scan(&ok))
		return ok
	}
	writer := connect(t, testURL)
	require.True(t, intent(writer, true))
	tx := beginTx(t, pool)
	ok, err := AcquireSharedTx(ctx(t), tx, p, "vol", NoWait)
	require.NoError(t, err)
	require.False(t, ok, "refused while a writer holds the intent")
	ok, err = AcquireSharedTx(ctx(t), tx, p, "vol", Timeout(200*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok, "waits, then times out, while a writer holds the intent")
	requireUsable(t, tx)
	require.True(t, intent(writer, false))
	ok, err = AcquireSharedTx(ctx(t), tx, p, "vol", NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, intent(writer, true), "the reader did not keep the intent to the end of its transaction")
	require.True(t, intent(writer, false))
}

// A name whose key a coordinator registered under another name is refused,
// and the transaction stays usable. AcquireTx itself registers nothing.
func TestAcquireTxKeyCollision(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	key := hash.Key(p + "vol")
	_, err := testPool.Exec(ctx(t), `INSERT INTO pgcoord.locks (key, name) VALUES ($1, $2)`, key, p+"impostor")
	require.NoError(t, err)
	defer testPool.Exec(context.Background(), `DELETE FROM pgcoord.locks WHERE key = $1`, key)
	tx := beginTx(t, pool)
	for _, f := range []func() error{
		func() error { _, err := AcquireTx(ctx(t), tx, p, "vol", NoWait); return err },
		func() error { _, err := AcquireSharedTx(ctx(t), tx, p, "vol", Wait); return err },
		func() error { _, err := AcquireFencedTx(ctx(t), tx, p, "vol", Wait); return err },
	} {
		err := f()
		require.ErrorIs(t, err, ErrKeyCollision)
		require.Contains(t, err.Error(), p+"impostor")
	}
	requireUsable(t, tx)
	require.Zero(t, serverHolders(t, key), "not locked")

	require.True(t, mustTryTx(t, tx, p, "unregistered", NoWait))
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.locks WHERE name = $1`, p+"unregistered").Scan(&n))
	require.Zero(t, n, "AcquireTx does not register names")
}

// AcquireFencedTx's tokens follow a coordinator's on the same sequence, and
// recording one fences off the older holders' guarded writes once the
// transaction commits.
func TestAcquireFencedTx(t *testing.T) {
	t.Parallel()
	pool := txPool(t)
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.Fencing = true })
	l := c.GetLock("vol")
	mustAcquire(t, l, NoWait)
	tokC := l.Token()

	tx := beginTx(t, pool)
	tok, err := AcquireFencedTx(ctx(t), tx, p, "vol", NoWait)
	require.NoError(t, err)
	require.Zero(t, tok, "busy: no token")
	require.NoError(t, l.Release(ctx(t)))
	tok, err = AcquireFencedTx(ctx(t), tx, p, "vol", Timeout(time.Second))
	require.NoError(t, err)
	require.Greater(t, tok, tokC)
	ok, err := FenceTx(ctx(t), tx, p, "vol", tok)
	require.NoError(t, err)
	require.True(t, ok, "the new token is the fence inside its own transaction")
	ok, err = FenceTx(ctx(t), tx, p, "vol", tokC)
	require.NoError(t, err)
	require.False(t, ok)
	requireBusy(t, c.GetLock("vol"))

	// The coordinator's old holder, guarding a write with its token in a
	// transaction of its own, waits for tx; once tx commits it is refused.
	other := beginTx(t, pool)
	fenced := make(chan error, 1)
	go func() {
		ok, err := FenceTx(ctx(t), other, p, "vol", tokC)
		if err == nil && ok {
			err = errors.New("the old token passed")
		}
		fenced <- err
	}()
	select {
	case err := <-fenced:
		t.Fatalf("the old token's check returned (%v) while tx, which recorded a newer token, was open", err)
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, tx.Commit(ctx(t)))
	require.NoError(t, <-fenced)
	require.NoError(t, other.Rollback(ctx(t)))
	after := beginTx(t, pool)
	ok, err = FenceTx(ctx(t), after, p, "vol", tokC)
	require.NoError(t, err)
	require.False(t, ok, "the coordinator's old token is fenced off")
	ok, err = FenceTx(ctx(t), after, p, "vol", tok)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, after.Rollback(ctx(t)))

	l2 := c.GetLock("vol")
	mustAcquire(t, l2, NoWait)
	require.Greater(t, l2.Token(), tok, "tokens keep increasing across both kinds of holders")
	last := beginTx(t, pool)
	ok, err = FenceTx(ctx(t), last, p, "vol", tok)
	require.NoError(t, err)
	require.False(t, ok)
}

// Without the schema the error says what to do.
func TestAcquireTxSchemaMissing(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(ctx(t), freshDatabase(t))
	require.NoError(t, err)
	defer pool.Close()
	tx := beginTx(t, pool)
	_, err = AcquireTx(ctx(t), tx, "p/", "vol", NoWait)
	require.ErrorIs(t, err, ErrSchemaMissing)
	require.Contains(t, err.Error(), "pgcoord migrate")
	require.NoError(t, tx.Rollback(ctx(t)))
}

// serverWaiters counts backends waiting on the server for the one-bigint
// advisory lock key, whoever they are (pgcoord.held_locks shows members'
// sessions only).
func serverWaiters(t testing.TB, key int64) int {
	t.Helper()
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted
		  AND ((classid::bigint << 32) | objid::bigint) = $1`, key).Scan(&n))
	return n
}

// serverHolders counts the backends holding the one-bigint advisory lock key.
func serverHolders(t testing.TB, key int64) int {
	t.Helper()
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND granted
		  AND ((classid::bigint << 32) | objid::bigint) = $1`, key).Scan(&n))
	return n
}
