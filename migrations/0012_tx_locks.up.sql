-- Transaction-scoped locks (AcquireTx, AcquireSharedTx, AcquireFencedTx):
-- the advisory lock of a name taken inside the caller's own transaction,
-- released when it ends. They work through a transaction-pooling proxy,
-- where session locks do not.

-- xact_lock takes key's transaction lock, exclusive or shared, and says
-- whether it got it. timeout_ms < 0 tries once, 0 waits without limit (the
-- client's context bounds it), > 0 waits at most that long. The wait runs in
-- the subtransaction of the EXCEPTION block, so a timeout (lock_not_available)
-- rolls back only that block and the caller's transaction stays usable; a
-- lock granted inside the block stays with the caller's transaction. The SET
-- clause restores the caller's lock_timeout when the function returns, so
-- the caller's own setting neither cuts the wait short nor is changed by it.
--
-- A shared request first waits for, then lets go of, the key's writer
-- intent (migration 8): a Coordinator's writer waiting beyond its session
-- budget holds it, and readers hold off until that writer has had its
-- turn. The intent is taken in a block of its own that is rolled back at
-- once (RAISE into the handler): a transaction lock cannot be released
-- otherwise, and held to the end of the caller's transaction it would keep
-- the writer from taking its intent.
CREATE FUNCTION pgcoord.xact_lock(key bigint, shared boolean, timeout_ms integer) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
    SET lock_timeout = 0
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    free boolean := true;
BEGIN
    IF shared THEN
        BEGIN
            IF timeout_ms < 0 THEN
                free := pg_try_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
            ELSE
                IF timeout_ms > 0 THEN
                    PERFORM set_config('lock_timeout', timeout_ms::text || 'ms', true);
                END IF;
                PERFORM pg_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
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

-- xact_fence takes a fencing token for key and records it in
-- pgcoord.fences inside the caller's transaction (AcquireFencedTx, which
-- calls it only once it holds key's lock). The row stays locked until that
-- transaction ends: a later holder's token waits for it, and a
-- Coordinator's write guarded by pgcoord.fence_ok with an older token no
-- longer lands once it commits. It waits for a transaction that guarded a
-- write with the previous token, as a Coordinator's acquire does.
CREATE FUNCTION pgcoord.xact_fence(key bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
#variable_conflict use_column
DECLARE
    new_token bigint := pgcoord.next_token();
BEGIN
    INSERT INTO pgcoord.fences AS f (key, token) VALUES (xact_fence.key, new_token)
    ON CONFLICT (key) DO UPDATE SET token = excluded.token, updated_at = now()
    WHERE f.token < excluded.token;
    RETURN new_token;
END
$$;
