package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
