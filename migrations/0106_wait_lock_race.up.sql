-- wait_lock and wait_lock_shared return the lock a wait was granted as its
-- lock_timeout fired. PostgreSQL raises lock_timeout (SQLSTATE 55P03) even
-- when the holder's release granted the lock just as the timeout fired
-- (LockErrorCleanup records the grant), and a session lock outlives the
-- failed statement and the function's exception block: the functions
-- returned 0, "timed out", while the session held the lock for nobody
-- until it closed. Now, when the timeout is caught, they look whether the
-- session holds the key in the mode waited for, and if so return a token:
-- the wait was served. A session that held the key before the call never
-- waits for it (its own locks never block it), so a lock it holds then is
-- the wait's. The look reads pg_locks, which costs a scan of the server's
-- lock table, only on a timeout. The library itself does not call these
-- functions (its waits are single statements, see queries/locks.sql).
CREATE OR REPLACE FUNCTION pgcoord.wait_lock(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_lock(key);
    RETURN pgcoord.next_token();
EXCEPTION WHEN lock_not_available THEN
    IF EXISTS (SELECT FROM pg_catalog.pg_locks l
               WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                 AND l.mode = 'ExclusiveLock' AND l.objsubid = 1
                 AND l.classid::bigint = ((key >> 32) & 4294967295)
                 AND l.objid::bigint = (key & 4294967295)) THEN
        -- Granted as the timeout fired. (The block's lock_timeout went
        -- with it; next_token can wait on the fencing sequence.)
        PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
        RETURN pgcoord.next_token();
    END IF;
    RETURN 0;
END
$$;

CREATE OR REPLACE FUNCTION pgcoord.wait_lock_shared(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
DECLARE
    -- Set once the writer's intent is passed: a timeout before that took
    -- nothing (the intent is a transaction lock, gone with the block).
    on_key boolean := false;
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
    on_key := true;
    PERFORM pg_advisory_lock_shared(key);
    RETURN pgcoord.next_token();
EXCEPTION WHEN lock_not_available THEN
    IF on_key AND EXISTS (SELECT FROM pg_catalog.pg_locks l
                          WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                            AND l.mode = 'ShareLock' AND l.objsubid = 1
                            AND l.classid::bigint = ((key >> 32) & 4294967295)
                            AND l.objid::bigint = (key & 4294967295)) THEN
        -- Granted as the timeout fired. (The block's lock_timeout went
        -- with it; next_token can wait on the fencing sequence.)
        PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
        RETURN pgcoord.next_token();
    END IF;
    RETURN 0;
END
$$;
