-- name: TxLock :one
-- AcquireTx and AcquireSharedTx, in the caller's transaction, in one round
-- trip: the name registry is read (never written: see AcquireTx), and the
-- lock is taken only when no other name is registered under key.
-- timeout_ms: < 0 try once, 0 wait without limit, > 0 wait at most that
-- long (pgcoord.xact_lock). CASE fixes the order.
SELECT coalesce(o.name, '')::text AS collides_with,
       (CASE WHEN o.name IS NOT NULL THEN false
             ELSE pgcoord.xact_lock(sqlc.arg(key)::bigint, sqlc.arg(shared)::boolean, sqlc.arg(timeout_ms)::integer)
        END)::boolean AS acquired
FROM (SELECT (SELECT l.name FROM pgcoord.locks l
              WHERE l.key = sqlc.arg(key)::bigint AND l.name <> sqlc.arg(name)::text) AS name) o;

-- name: TxLockFenced :one
-- AcquireFencedTx: TxLock, exclusive, and once the lock is held a fencing
-- token recorded in pgcoord.fences in the same transaction; 0 when not
-- acquired. Under synchronous_commit = off the transaction's commit is made
-- to wait for its local WAL flush (SET LOCAL: this transaction only, and
-- only ever stronger), as a Coordinator's sessions do (PrepareSession): a
-- crash would otherwise take back the sequence's advance and the fence
-- row, and hand the token out again.
SELECT coalesce(o.name, '')::text AS collides_with,
       (CASE WHEN o.name IS NOT NULL THEN 0
             WHEN pgcoord.xact_lock(sqlc.arg(key)::bigint, false, sqlc.arg(timeout_ms)::integer)
                 THEN pgcoord.xact_fence(sqlc.arg(key)::bigint)
                      + 0 * length(CASE WHEN current_setting('synchronous_commit') = 'off'
                                        THEN set_config('synchronous_commit', 'local', true)
                                        ELSE '' END)
             ELSE 0
        END)::bigint AS token
FROM (SELECT (SELECT l.name FROM pgcoord.locks l
              WHERE l.key = sqlc.arg(key)::bigint AND l.name <> sqlc.arg(name)::text) AS name) o;

-- name: TxFenceOK :one
-- FenceTx: whether token is still the newest recorded for key; the fence
-- row stays locked (FOR SHARE) until the caller's transaction ends, so no
-- newer holder's token can be recorded meanwhile.
SELECT pgcoord.fence_ok(sqlc.arg(key)::bigint, sqlc.arg(token)::bigint)::boolean AS ok;
