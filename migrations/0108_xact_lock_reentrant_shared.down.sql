-- Back to migration 0100's xact_lock.
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
