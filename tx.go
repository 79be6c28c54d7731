package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// txQueries runs the transaction-lock statements on the caller's pgx.Tx;
// they need no Coordinator.
var txQueries = db.New()

// AcquireTx takes the advisory lock of prefix+name inside tx,
// transaction-scoped: it is released when tx commits or rolls back, and
// there is no Release. It needs no Coordinator and works through a
// transaction-pooling proxy (PgBouncer, RDS Proxy, Supavisor in transaction
// mode), where a Coordinator's session locks do not. The key is the one a
// Coordinator whose Config.Prefix is prefix uses for name (Lock.Key), so a
// transaction lock and a Coordinator's lock of the same name exclude each
// other, both ways. See docs/transaction-locks.md for when to use it.
//
// It returns (true, nil) when acquired and (false, nil) when the lock is
// busy under NoWait or stayed busy for the whole Timeout. Both leave tx
// usable: a Timeout waits on the server in a subtransaction with a
// lock_timeout of its own (the caller's lock_timeout is neither used nor
// changed), and a timed-out wait rolls back only that subtransaction. Wait
// waits until ctx ends.
//
// Cancellation: when ctx ends during a wait, pgx interrupts the statement
// (by default it closes tx's connection), so tx is unusable afterwards: roll
// it back. The error wraps ctx.Err(). A Timeout or NoWait never needs ctx to
// end. The server's statement_timeout, if set, also bounds the wait and
// aborts tx when it fires.
//
// Other errors: ErrInvalidName for an empty, invalid UTF-8, NUL-containing
// or too long name (prefix+name longer than MaxNameLen); ErrNoTransaction
// for a nil tx; ErrKeyCollision when another name with the same key is
// registered in pgcoord.locks (the lock is then not taken); ErrSchemaMissing
// when the database has no pgcoord schema of version 12 or later (run
// `pgcoord migrate` once, over a direct connection). A server error (the tx
// already aborted, say) is returned as it is, and aborts tx as any failed
// statement does.
//
// Name registration: AcquireTx reads pgcoord.locks to refuse a name whose
// key a Coordinator registered under another name, but never writes it. A
// registration inside tx would be undone by its rollback, would make
// concurrent first users of a name wait for each other's transactions, and
// would cost a write; one outside tx needs another connection. Two names
// used only through AcquireTx that share a key (a 2^-64 chance per pair)
// are not detected.
//
// Cost: one round trip (the registry lookup, the try or wait, all in one
// statement), one subtransaction without a transaction id, no table write.
// The lock is held in PostgreSQL's lock table until tx ends, like any lock
// tx takes.
//
// Inside a nested transaction (tx.Begin: a savepoint), a rollback of the
// nested transaction releases the lock as well.
func AcquireTx(ctx context.Context, tx pgx.Tx, prefix, name string, b Blocking) (bool, error) {
	return acquireTx(ctx, tx, prefix, name, b, false)
}

// AcquireSharedTx takes the advisory lock of prefix+name shared (a read
// lock) inside tx: any number of shared holders at once, in transactions or
// in Coordinators (Lock.AcquireShared), or one exclusive holder, never both.
// It behaves as AcquireTx in every other way. Like a Coordinator's shared
// acquire, it holds off while a Coordinator's exclusive acquirer waits for
// the name (in the server's queue, or beyond its session budget holding the
// name's writer intent), so readers do not starve a writer.
func AcquireSharedTx(ctx context.Context, tx pgx.Tx, prefix, name string, b Blocking) (bool, error) {
	return acquireTx(ctx, tx, prefix, name, b, true)
}

// AcquireFencedTx is AcquireTx, exclusive, that also returns a fencing
// token: a new value of the sequence behind Lock.Token (pgcoord.next_token),
// larger than every token handed out before for any name, and 0 when the
// lock was not acquired. In the same statement the token is recorded in
// pgcoord.fences as the newest for the name's key, inside tx, so that:
//
//   - a write guarded by pgcoord.fence_ok(key, oldToken) (a Coordinator's
//     holder with Config.Fencing, or an earlier AcquireFencedTx) no longer
//     lands once tx commits, and a transaction that guarded a write with
//     the previous token is waited for first: it cannot land after this
//     holder's writes;
//   - the token can be handed to a store outside PostgreSQL that rejects
//     writes carrying a token lower than one it has seen.
//
// The record is part of tx: it is undone by a rollback, and other
// transactions see it (and fence_ok with this token waits for tx) only once
// tx commits. Writes tx itself makes need no guard: the lock covers them.
// When synchronous_commit is off, it is set to local for tx alone (SET
// LOCAL), so that a crash cannot take back the token and the fence row once
// tx has committed and hand the token out again.
//
// Cost: AcquireTx's, plus one sequence value and one row upsert in
// pgcoord.fences when acquired. It needs the grants of Config.Fencing
// (see the README): INSERT and UPDATE on pgcoord.fences, USAGE on the
// sequence pgcoord.fencing_token. Errors as AcquireTx.
func AcquireFencedTx(ctx context.Context, tx pgx.Tx, prefix, name string, b Blocking) (int64, error) {
	full, key, err := txLockKey(tx, prefix, name)
	if err != nil {
		return 0, err
	}
	row, err := txQueries.TxLockFenced(ctx, tx, db.TxLockFencedParams{Key: key, Name: full, TimeoutMs: txTimeoutMS(b)})
	if err != nil {
		return 0, txError(ctx, full, err)
	}
	if row.CollidesWith != "" {
		return 0, txCollision(full, row.CollidesWith)
	}
	return row.Token, nil
}

// FenceTx reports whether token is still the newest fencing token recorded
// for prefix+name in pgcoord.fences: the token of a Coordinator's Lock
// (Config.Fencing) or of AcquireFencedTx. While tx lasts, the fence row
// stays locked (FOR SHARE), so no newer holder's token can be recorded
// until tx ends: a write tx makes after FenceTx returned true lands while
// the lock is still the writer's, or not at all. This is pgcoord.fence_ok,
// which a write's WHERE clause can also call directly.
//
// Use it to guard writes made through a transaction pooler on behalf of a
// Coordinator's holder: the Coordinator holds the lock on its own sessions,
// the application's transaction checks the token. It returns false when the
// hold was lost and someone else has acquired since (or the token was never
// recorded). One round trip; errors as AcquireTx. Under REPEATABLE READ
// or SERIALIZABLE a stale token whose fence moved after tx's snapshot is
// refused with the server's serialization failure (SQLSTATE 40001, tx
// aborted) rather than false, and AcquireFencedTx fails the same way when
// its key's fence moved after the snapshot.
func FenceTx(ctx context.Context, tx pgx.Tx, prefix, name string, token int64) (bool, error) {
	full, key, err := txLockKey(tx, prefix, name)
	if err != nil {
		return false, err
	}
	ok, err := txQueries.TxFenceOK(ctx, tx, db.TxFenceOKParams{Key: key, Token: token})
	if err != nil {
		return false, txError(ctx, full, err)
	}
	return ok, nil
}

func acquireTx(ctx context.Context, tx pgx.Tx, prefix, name string, b Blocking, shared bool) (bool, error) {
	full, key, err := txLockKey(tx, prefix, name)
	if err != nil {
		return false, err
	}
	row, err := txQueries.TxLock(ctx, tx, db.TxLockParams{Key: key, Name: full, Shared: shared, TimeoutMs: txTimeoutMS(b)})
	if err != nil {
		return false, txError(ctx, full, err)
	}
	if row.CollidesWith != "" {
		return false, txCollision(full, row.CollidesWith)
	}
	return row.Acquired, nil
}

// txLockKey checks the arguments and returns the full name and its key, as
// Coordinator.GetLock makes them.
func txLockKey(tx pgx.Tx, prefix, name string) (string, int64, error) {
	if tx == nil {
		return "", 0, fmt.Errorf("%w: lock %q", ErrNoTransaction, prefix+name)
	}
	if name == "" {
		return "", 0, fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	full := prefix + name
	if err := validateName(full); err != nil {
		return "", 0, err
	}
	return full, hash.Key(full), nil
}

// txTimeoutMS is pgcoord.xact_lock's timeout_ms for b: -1 tries once, 0
// waits without limit, else the timeout rounded up to a millisecond.
func txTimeoutMS(b Blocking) int32 {
	switch b.mode {
	case blockNoWait:
		return -1
	case blockTimeout:
		ms := (b.timeout + time.Millisecond - 1) / time.Millisecond
		return int32(min(max(ms, 1), math.MaxInt32))
	default:
		return 0
	}
}

func txCollision(full, other string) error {
	return fmt.Errorf("%w: %q has the key of the registered name %q; not locked", ErrKeyCollision, full, other)
}

// txError types what the caller can act on: a cancelled wait (the
// transaction is unusable), a missing schema, a full lock table.
func txError(ctx context.Context, full string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("pgcoord: lock %q in transaction: %w (the statement was interrupted: roll the transaction back)", full, ctxErr)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3F000", "42P01", "42883": // no schema, table or function
			return fmt.Errorf("%w: lock %q in transaction needs schema pgcoord at version %d or later; run `pgcoord migrate` once over a direct connection: %w",
				ErrSchemaMissing, full, txSchemaVersion, err)
		}
	}
	return fmt.Errorf("pgcoord: lock %q in transaction: %w", full, lockTableFull(err))
}

// txSchemaVersion is the first migration with the transaction-lock
// functions.
const txSchemaVersion = firstReleaseVersion
