-- Back to plain nextval; the sequence stays where it is, so tokens still
-- only increase.
CREATE OR REPLACE FUNCTION pgcoord.wait_lock(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_lock(key);
    RETURN nextval('pgcoord.fencing_token');
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END
$$;

DROP FUNCTION IF EXISTS pgcoord.next_token();
DROP FUNCTION IF EXISTS pgcoord.raise_token_floor();
DROP FUNCTION IF EXISTS pgcoord.timeline_floor();
