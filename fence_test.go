package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// With Fencing, a write in the application's own transaction guarded by
// pgcoord.fence_ok lands only while the lock is the writer's: after the
// hold is lost and another member acquired, the old token's write does
// nothing. And a newer acquire waits for a transaction that guarded a write
// with the old token, so that write cannot land after the lock moved on.
func TestFencedWrites(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	fencing := func(cfg *Config) { cfg.Fencing = true }
	a, b := newCoord(t, p, fencing), newCoord(t, p, fencing)
	table := "fenced_" + randomSuffix()
	_, err := testPool.Exec(ctx(t), `CREATE TABLE `+table+` (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	defer testPool.Exec(context.Background(), `DROP TABLE `+table)
	_, err = testPool.Exec(ctx(t), `INSERT INTO `+table+` VALUES (1, 'init')`)
	require.NoError(t, err)
	write := func(key, token int64, v string) int64 {
		tag, err := testPool.Exec(ctx(t), `UPDATE `+table+` SET v = $1 WHERE id = 1 AND pgcoord.fence_ok($2, $3)`, v, key, token)
		require.NoError(t, err)
		return tag.RowsAffected()
	}

	la := a.GetLock("volume")
	mustAcquire(t, la, NoWait)
	keyA, tokA := la.Key(), la.Token()
	require.EqualValues(t, 1, write(keyA, tokA, "a"), "the holder's write lands")

	// a's session dies; b takes the lock; a's late write with its old token
	// does nothing.
	_, err = testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, keyA))
	require.NoError(t, err)
	lb := b.GetLock("volume")
	require.Eventually(t, func() bool { ok, _ := lb.Acquire(ctx(t), NoWait); return ok }, 5*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 0, write(keyA, tokA, "a, late"), "the stale token's write is refused")
	require.EqualValues(t, 1, write(lb.Key(), lb.Token(), "b"))

	// b's guarded write is in flight in a transaction when b loses the lock:
	// a's next acquire waits for that transaction, so b's write lands before
	// a holds the lock, never after.
	tx, err := testPool.BeginTx(ctx(t), pgx.TxOptions{})
	require.NoError(t, err)
	tag, err := tx.Exec(ctx(t), `UPDATE `+table+` SET v = 'b, in flight' WHERE id = 1 AND pgcoord.fence_ok($1, $2)`, lb.Key(), lb.Token())
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	require.NoError(t, lb.Release(ctx(t)))
	acquired := make(chan error, 1)
	la2 := a.GetLock("volume")
	go func() {
		ok, err := la2.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = context.DeadlineExceeded
		}
		acquired <- err
	}()
	select {
	case err := <-acquired:
		t.Fatalf("acquired (%v) while a write guarded by the old token was in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, tx.Commit(ctx(t)))
	require.NoError(t, <-acquired)
	require.EqualValues(t, 0, write(lb.Key(), lb.Token(), "b, after"), "b's token is stale now")
	require.EqualValues(t, 1, write(la2.Key(), la2.Token(), "a again"))
	require.NoError(t, la2.Release(ctx(t)))
}

// What fencing means where it is weaker than "the writer's lock", pinned
// as docs/api.md says it (#fencing-tokens). fence_ok compares with the one
// newest token of the key, so:
//   - of shared holders that overlap, only the one that acquired last
//     passes; an earlier one is refused while it still holds;
//   - a holder that records no token (AcquireTx, AcquireSharedTx, a
//     coordinator without Config.Fencing) does not move the fence: a stale
//     fenced holder's guarded write still lands while it holds the lock;
//   - under REPEATABLE READ or SERIALIZABLE, a stale token whose fence
//     moved after the transaction's snapshot is refused with a
//     serialization failure (40001), not false, and so is AcquireFencedTx
//     when the fence moved after the snapshot (the transaction is aborted);
//   - and, docs/transaction-locks.md: under REPEATABLE READ an AcquireTx
//     that waits has its transaction's snapshot from before the wait, so
//     the previous holder's last write is not seen.
func TestFenceLimits(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	fencing := func(cfg *Config) { cfg.Fencing = true }
	a, b := newCoord(t, p, fencing), newCoord(t, p, fencing)
	pool := txPool(t)
	fenceOK := func(name string, token int64) bool {
		t.Helper()
		tx := beginTx(t, pool)
		defer tx.Rollback(context.Background())
		ok, err := FenceTx(ctx(t), tx, p, name, token)
		require.NoError(t, err)
		return ok
	}

	ra, rb := a.GetLock("shared"), b.GetLock("shared")
	for _, r := range []*Lock{ra, rb} {
		ok, err := r.AcquireShared(ctx(t), NoWait)
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.Greater(t, rb.Token(), ra.Token())
	require.False(t, fenceOK("shared", ra.Token()), "the earlier of two shared holders, still holding")
	require.True(t, fenceOK("shared", rb.Token()), "the later one")
	require.NoError(t, ra.Release(ctx(t)))
	require.NoError(t, rb.Release(ctx(t)))

	la := a.GetLock("unfenced")
	mustAcquire(t, la, NoWait)
	stale := la.Token()
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, la.Key()))
	require.NoError(t, err)
	holder := beginTx(t, pool)
	require.Eventually(t, func() bool { return mustTryTx(t, holder, p, "unfenced", NoWait) }, 5*time.Second, 10*time.Millisecond)
	require.True(t, fenceOK("unfenced", stale), "AcquireTx holds the lock, and moved no fence")
	require.NoError(t, holder.Rollback(ctx(t)))
	requireClosedWithin(t, la.Lost(), 10*time.Second, "the terminated hold's loss")

	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		mustAcquire(t, la, Timeout(5*time.Second))
		old := la.Token()
		tx, err := pool.BeginTx(ctx(t), pgx.TxOptions{IsoLevel: iso})
		require.NoError(t, err)
		require.NoError(t, tx.QueryRow(ctx(t), `SELECT 1`).Scan(new(int)), "the snapshot")
		require.NoError(t, la.Release(ctx(t)))
		lb := b.GetLock("unfenced")
		mustAcquire(t, lb, NoWait)
		ok, err := FenceTx(ctx(t), tx, p, "unfenced", old)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "%s", iso)
		require.Equal(t, "40001", pgErr.Code, "%s", iso)
		require.False(t, ok)
		require.NoError(t, tx.Rollback(ctx(t)))

		tx, err = pool.BeginTx(ctx(t), pgx.TxOptions{IsoLevel: iso})
		require.NoError(t, err)
		require.NoError(t, tx.QueryRow(ctx(t), `SELECT 1`).Scan(new(int)), "the snapshot")
		require.NoError(t, lb.Release(ctx(t)))
		mustAcquire(t, lb, NoWait) // a newer fence, after the snapshot
		require.NoError(t, lb.Release(ctx(t)))
		tok, err := AcquireFencedTx(ctx(t), tx, p, "unfenced", NoWait)
		require.ErrorAs(t, err, &pgErr, "%s", iso)
		require.Equal(t, "40001", pgErr.Code, "%s", iso)
		require.Zero(t, tok)
		require.NoError(t, tx.Rollback(ctx(t)))
	}

	// REPEATABLE READ: an AcquireTx that waits took the snapshot before
	// the previous holder's last write committed.
	table := "fencelimits_" + randomSuffix()
	_, err = testPool.Exec(ctx(t), `CREATE TABLE `+table+` (v int); INSERT INTO `+table+` VALUES (0)`)
	require.NoError(t, err)
	defer testPool.Exec(context.Background(), `DROP TABLE `+table)
	mustAcquire(t, la, NoWait)
	tx, err := pool.BeginTx(ctx(t), pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	got := make(chan error, 1)
	go func() {
		ok, err := AcquireTx(ctx(t), tx, p, "unfenced", Timeout(10*time.Second))
		if err == nil && !ok {
			err = errors.New("not acquired")
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return waiters(t, la.Key()) > 0 }, 5*time.Second, 5*time.Millisecond)
	_, err = testPool.Exec(ctx(t), `UPDATE `+table+` SET v = 1`)
	require.NoError(t, err)
	require.NoError(t, la.Release(ctx(t)))
	require.NoError(t, <-got)
	var v int
	require.NoError(t, tx.QueryRow(ctx(t), `SELECT v FROM `+table).Scan(&v))
	require.Zero(t, v, "the previous holder's write, committed before the lock passed on, is not seen")
}
