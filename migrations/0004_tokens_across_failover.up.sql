-- Fencing tokens that keep increasing across a failover, even with
-- asynchronous replication. A promoted standby's copy of the
-- pgcoord.fencing_token sequence lags its old primary's by whatever WAL had
-- not reached it, so nextval alone would hand out again tokens the old
-- primary already gave. Promotion starts a new timeline, so every token is
-- taken at or above a floor set by the timeline the server writes on:
-- timeline << 48. The first token on a new timeline moves the sequence up
-- to that timeline's floor, above anything an older timeline could have
-- issued (2^48 tokens each); later tokens are plain nextval. The sequence
-- is never moved down, so tokens also stay increasing through a
-- pg_upgrade or a dump and restore, which may start timelines over at 1.
--
-- The timeline is the WAL insert position's (the first 8 hex digits of its
-- WAL file name): a promoted standby writes on its new timeline from its
-- first write, while pg_control_checkpoint() shows it only after the next
-- checkpoint.
CREATE FUNCTION pgcoord.timeline_floor() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    timeline bigint := ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::integer;
BEGIN
    IF timeline > 32767 THEN
        RAISE EXCEPTION 'pgcoord: timeline % leaves no room for fencing tokens', timeline;
    END IF;
    RETURN timeline << 48;
END
$$;

-- raise_token_floor takes the first token of this server's timeline: one
-- session moves the sequence up to the floor; the others wait for it (a
-- transaction lock, released when the statement ends) and then find the
-- sequence above it. Without the lock a late setval could move the
-- sequence back below tokens already issued. The key is
-- hash.Key("pgcoord\x00token-floor"): no lock name can contain a NUL byte.
-- It runs as its owner, since setval needs UPDATE on the sequence and an
-- application role has only USAGE; it takes no argument, so nobody can
-- move the sequence anywhere but to the floor of the current timeline.
CREATE FUNCTION pgcoord.raise_token_floor() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    floor bigint := pgcoord.timeline_floor();
    token bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4802603721983448232);
    token := nextval('pgcoord.fencing_token');
    IF token <= floor THEN
        PERFORM setval('pgcoord.fencing_token', floor);
        token := nextval('pgcoord.fencing_token');
    END IF;
    RETURN token;
END
$$;

-- next_token is every fencing token: plain nextval once the sequence is
-- above the floor of the server's timeline.
CREATE FUNCTION pgcoord.next_token() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    token bigint := nextval('pgcoord.fencing_token');
BEGIN
    IF token > pgcoord.timeline_floor() THEN
        RETURN token;
    END IF;
    RETURN pgcoord.raise_token_floor();
END
$$;

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
