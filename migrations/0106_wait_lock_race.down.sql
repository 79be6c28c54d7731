-- Back to migration 0100's wait_lock and wait_lock_shared.
CREATE OR REPLACE FUNCTION pgcoord.wait_lock(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_lock(key);
    RETURN pgcoord.next_token();
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END
$$;

CREATE OR REPLACE FUNCTION pgcoord.wait_lock_shared(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
    PERFORM pg_advisory_lock_shared(key);
    RETURN pgcoord.next_token();
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END
$$;
