-- Migration 102's body of queue_head and migration 101's of queue_leave, where migration 101's table still
-- exists (a down runs again harmlessly after it).
DO $down$
BEGIN
    IF to_regclass('pgcoord.wait_queue') IS NULL THEN
        RETURN;
    END IF;
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgcoord.queue_head(p_key bigint, p_ticket bigint, p_shared boolean) RETURNS boolean
LANGUAGE sql STABLE AS $body$
    WITH me AS (
        SELECT member_id FROM pgcoord.wait_queue WHERE ticket = p_ticket
    ), first AS (
        SELECT q.since, q.ticket FROM pgcoord.wait_queue q JOIN me USING (member_id)
        WHERE q.key = p_key
        ORDER BY q.since, q.ticket LIMIT 1
    )
    SELECT NOT EXISTS (
        SELECT 1 FROM pgcoord.wait_queue q, me, first
        WHERE q.key = p_key AND q.member_id <> me.member_id
          AND (q.since, q.ticket) < (first.since, first.ticket)
          AND (NOT q.shared OR NOT p_shared)
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid)))
$body$
$fn$;
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgcoord.queue_leave(p_key bigint, p_ticket bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue WHERE ticket = p_ticket;
    IF EXISTS (SELECT 1 FROM pgcoord.wait_queue WHERE key = p_key) THEN
        PERFORM pg_notify('pgcoord_queue', p_key::text);
    END IF;
END
$body$
$fn$;
END
$down$;
