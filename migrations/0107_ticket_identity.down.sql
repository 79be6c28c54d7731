-- Migration 103's bodies of queue_head and queue_leave, migration 102's of
-- queue_enter, and the table without app_name, where the table still
-- exists (a down runs again harmlessly after it).
DO $down$
BEGIN
    IF to_regclass('pgcoord.wait_queue') IS NULL THEN
        RETURN;
    END IF;
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgcoord.queue_head(p_key bigint, p_ticket bigint, p_shared boolean) RETURNS boolean
LANGUAGE plpgsql STABLE AS $body$
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
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid)));
END
$body$
$fn$;
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgcoord.queue_leave(p_key bigint, p_ticket bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $body$
DECLARE
    v_member text;
    v_shared boolean;
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue WHERE ticket = p_ticket;
    SELECT q.member_id, q.shared INTO v_member, v_shared FROM pgcoord.wait_queue q
    WHERE q.key = p_key AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid))
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
$body$
$fn$;
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgcoord.queue_enter(p_key bigint, p_shared boolean, p_member_id text, p_age_us bigint,
                                               OUT ticket bigint, OUT head boolean)
LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue q
    WHERE q.key = p_key AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid));
    INSERT INTO pgcoord.wait_queue (key, shared, member_id, since)
    VALUES (p_key, p_shared, p_member_id, clock_timestamp() - make_interval(secs => greatest(p_age_us, 0) / 1e6))
    RETURNING wait_queue.ticket INTO ticket;
    head := pgcoord.queue_head(p_key, ticket, p_shared);
END
$body$
$fn$;
    ALTER TABLE pgcoord.wait_queue DROP COLUMN IF EXISTS app_name;
END
$down$;
