-- name: TryLockShared :one
-- A shared try (Lock.AcquireShared), in one round trip with its fencing
-- token candidate (see TryLock); 0 means busy. Refused while a writer holds the key's writer
-- intent (see pgcoord.wait_lock_shared); PostgreSQL itself refuses it while an
-- exclusive request waits in the key's queue. CASE fixes the order.
SELECT (CASE
    WHEN NOT pg_try_advisory_xact_lock_shared(((sqlc.arg(key)::bigint >> 32)::integer # 1431655765),
                                              sqlc.arg(key)::bigint::bit(32)::integer) THEN 0
    WHEN pg_try_advisory_lock_shared(sqlc.arg(key)::bigint) THEN nextval('pgcoord.fencing_token')
    ELSE 0 END)::bigint AS token;

-- name: TryJoinShared :one
-- TryLockShared for a session that may already hold key shared (another
-- reader of this process): PostgreSQL grants a session a lock it holds
-- without looking at the queue, so a stream of readers of one process
-- would starve a writer waiting on the server. A waiting exclusive
-- request is looked for in pg_locks first.
SELECT (CASE
    WHEN NOT pg_try_advisory_xact_lock_shared(((sqlc.arg(key)::bigint >> 32)::integer # 1431655765),
                                              sqlc.arg(key)::bigint::bit(32)::integer) THEN 0
    WHEN EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND NOT l.granted AND l.mode = 'ExclusiveLock'
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
          AND l.classid::bigint = ((sqlc.arg(key)::bigint >> 32) & 4294967295)
          AND l.objid::bigint = (sqlc.arg(key)::bigint & 4294967295)) THEN 0
    WHEN pg_try_advisory_lock_shared(sqlc.arg(key)::bigint) THEN nextval('pgcoord.fencing_token')
    ELSE 0 END)::bigint AS token;

-- name: WaitLockShared :one
-- Waits on the server for key shared for at most timeout_ms, as WaitLock
-- does (a timeout fails with 55P03), behind any writer's intent (migration
-- 8: taken shared for the length of the statement, so the wait queues
-- while a writer holds it): pgcoord.wait_lock_shared without its exception
-- block and next_token.
SELECT (CASE WHEN set_config('lock_timeout', sqlc.arg(timeout_ms)::integer || 'ms', true) IS NULL THEN 0
             WHEN pg_advisory_xact_lock_shared(((sqlc.arg(key)::bigint >> 32)::integer # 1431655765),
                                               sqlc.arg(key)::bigint::bit(32)::integer) IS NULL THEN 0
             WHEN pg_advisory_lock_shared(sqlc.arg(key)::bigint) IS NULL THEN 0
             ELSE nextval('pgcoord.fencing_token') END)::bigint AS token;

-- name: UnlockShared :one
-- Unlock for a shared hold: releases one shared level of key, then
-- notifies waiters beyond their budget as Unlock does.
SELECT (CASE
    WHEN NOT pg_advisory_unlock_shared(sqlc.arg(key)::bigint) THEN false
    WHEN pg_try_advisory_xact_lock((sqlc.arg(key)::bigint >> 32)::integer, sqlc.arg(key)::bigint::bit(32)::integer) THEN true
    ELSE (SELECT true FROM pg_notify('pgcoord_free', sqlc.arg(key)::bigint::text))
END)::boolean AS released;

-- name: TakeWriterIntent :one
-- A writer waiting beyond its budget takes the key's writer intent, so
-- that shared tries and waits hold off until it has the lock.
SELECT pg_try_advisory_lock(((sqlc.arg(key)::bigint >> 32)::integer # 1431655765),
                            sqlc.arg(key)::bigint::bit(32)::integer) AS ok;

-- name: DropWriterIntent :one
SELECT pg_advisory_unlock(((sqlc.arg(key)::bigint >> 32)::integer # 1431655765),
                          sqlc.arg(key)::bigint::bit(32)::integer) AS ok;
