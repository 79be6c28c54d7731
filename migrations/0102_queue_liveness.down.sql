-- Migration 101's bodies of queue_head and queue_enter, where migration
-- 101's table still exists (a down runs again harmlessly after it).
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
          AND q.backend_pid IN (SELECT pid FROM pg_catalog.pg_stat_activity))
$body$
$fn$;
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgcoord.queue_enter(p_key bigint, p_shared boolean, p_member_id text, p_age_us bigint,
                                    OUT ticket bigint, OUT head boolean)
LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue q
    WHERE q.key = p_key AND q.backend_pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_activity);
    INSERT INTO pgcoord.wait_queue (key, shared, member_id, since)
    VALUES (p_key, p_shared, p_member_id, clock_timestamp() - make_interval(secs => greatest(p_age_us, 0) / 1e6))
    RETURNING wait_queue.ticket INTO ticket;
    head := pgcoord.queue_head(p_key, ticket, p_shared);
END
$body$
$fn$;
END
$down$;
