-- A ticket's liveness (migrations 101 to 103) was its backend pid's alone:
-- a member that died while waiting left a ticket that a later, unrelated
-- backend given the same pid made live again. It then stood before every
-- queued wait of other members for its key for as long as that backend
-- lived, and pruning, which tests the same, kept it. A ticket now also
-- records its session's application_name (pgcoord sets it to the member's
-- session tag, and pg_stat_get_activity shows it to every role), and is
-- live only while a backend of that pid with that application_name runs.
-- A ticket from before this migration (app_name NULL) is tested by its pid
-- alone, as before.
ALTER TABLE pgcoord.wait_queue ADD COLUMN app_name text;
-- Set apart from the ADD, so that tickets already there stay NULL rather
-- than take the migrating session's application_name.
ALTER TABLE pgcoord.wait_queue ALTER COLUMN app_name SET DEFAULT current_setting('application_name');

-- Migration 103's body, with the new test of a ticket's backend.
CREATE OR REPLACE FUNCTION pgcoord.queue_head(p_key bigint, p_ticket bigint, p_shared boolean) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_member text;
    v_since timestamptz;
    v_ticket bigint;
BEGIN
    SELECT q.member_id INTO v_member FROM pgcoord.wait_queue q WHERE q.ticket = p_ticket;
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    SELECT q.since, q.ticket INTO v_since, v_ticket FROM pgcoord.wait_queue q
    WHERE q.key = p_key AND q.member_id = v_member
    ORDER BY q.since, q.ticket LIMIT 1;
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    RETURN NOT EXISTS (
        SELECT 1 FROM pgcoord.wait_queue q
        WHERE q.key = p_key AND q.member_id <> v_member
          AND (q.since, q.ticket) < (v_since, v_ticket)
          AND (NOT q.shared OR NOT p_shared)
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid) a
                      WHERE q.app_name IS NULL OR a.application_name = q.app_name));
END
$$;

-- Migration 103's body, with the new test of a ticket's backend.
CREATE OR REPLACE FUNCTION pgcoord.queue_leave(p_key bigint, p_ticket bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_member text;
    v_shared boolean;
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue WHERE ticket = p_ticket;
    SELECT q.member_id, q.shared INTO v_member, v_shared FROM pgcoord.wait_queue q
    WHERE q.key = p_key
      AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid) a
                  WHERE q.app_name IS NULL OR a.application_name = q.app_name)
    ORDER BY q.since, q.ticket LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_shared THEN
        PERFORM pg_notify('pgcoord_queue', p_key::text);
    ELSE
        PERFORM pg_notify('pgcoord_queue', p_key::text || ' ' || v_member);
    END IF;
END
$$;

-- Migration 102's body, with the new test of a ticket's backend: the dead
-- tickets of the key go before a new one is taken.
CREATE OR REPLACE FUNCTION pgcoord.queue_enter(p_key bigint, p_shared boolean, p_member_id text, p_age_us bigint,
                                               OUT ticket bigint, OUT head boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue q
    WHERE q.key = p_key
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid) a
                      WHERE q.app_name IS NULL OR a.application_name = q.app_name);
    INSERT INTO pgcoord.wait_queue (key, shared, member_id, since)
    VALUES (p_key, p_shared, p_member_id, clock_timestamp() - make_interval(secs => greatest(p_age_us, 0) / 1e6))
    RETURNING wait_queue.ticket INTO ticket;
    head := pgcoord.queue_head(p_key, ticket, p_shared);
END
$$;
