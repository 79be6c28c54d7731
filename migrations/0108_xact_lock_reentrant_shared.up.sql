-- xact_lock: a shared request of a transaction that holds the key already
-- (AcquireSharedTx twice, or after AcquireTx) no longer waits for the
-- key's writer intent. A coordinator's writer waiting beyond its budget
-- holds the intent while it waits for this very transaction, so the second
-- request waited for itself: refused under NoWait and Timeout, for ever
-- under Wait (TestAcquireSharedTxAgainBesideWaitingWriter). PostgreSQL
-- grants a transaction a lock it holds at once, whatever waits; now so
-- does xact_lock. The intent is tried first, as before; only when it is
-- busy does the function look in pg_locks (a scan of the lock table) for
-- this backend's hold of the key.
CREATE OR REPLACE FUNCTION pgcoord.xact_lock(key bigint, shared boolean, timeout_ms integer) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
    SET lock_timeout = 0
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    free boolean := true;
BEGIN
    IF shared THEN
        BEGIN
            free := pg_try_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
            IF NOT free AND EXISTS (
                    SELECT FROM pg_catalog.pg_locks l
                    WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                      AND l.objsubid = 1
                      AND l.classid::bigint = ((key >> 32) & 4294967295)
                      AND l.objid::bigint = (key & 4294967295)) THEN
                -- This transaction holds the key already: the request is
                -- granted whatever waits, and the writer that holds the
                -- intent waits for this transaction.
                free := true;
            ELSIF NOT free AND timeout_ms >= 0 THEN
                IF timeout_ms > 0 THEN
                    PERFORM set_config('lock_timeout', timeout_ms::text || 'ms', true);
                END IF;
                PERFORM pg_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
                free := true;
            END IF;
            RAISE SQLSTATE 'PGCIR';
        EXCEPTION WHEN SQLSTATE 'PGCIR' THEN
            NULL;
        END;
        IF NOT free THEN
            RETURN false;
        END IF;
    END IF;
    IF timeout_ms < 0 THEN
        IF shared THEN
            RETURN pg_try_advisory_xact_lock_shared(key);
        END IF;
        RETURN pg_try_advisory_xact_lock(key);
    END IF;
    IF timeout_ms > 0 THEN
        PERFORM set_config('lock_timeout',
            greatest(ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000), 1)::bigint::text || 'ms', true);
    END IF;
    IF shared THEN
        PERFORM pg_advisory_xact_lock_shared(key);
    ELSE
        PERFORM pg_advisory_xact_lock(key);
    END IF;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;
