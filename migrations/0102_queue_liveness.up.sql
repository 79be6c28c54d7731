-- The wait queue's liveness checks (migration 101) looked a ticket's
-- backend up in pg_stat_activity, a view that builds a row of some thirty
-- columns, the query text among them, for every backend of the server,
-- and joins them to pg_database and pg_authid: make fleet (50 coordinators,
-- 100 backends) measured queue_head at 3.7-5.5 ms of server time a call,
-- the largest share of the server's time. A ticket's backend is looked up
-- alone now (pg_stat_get_activity with its pid returns its one row, or
-- none once it is gone), and only for the tickets a check reaches: the
-- first live one ahead ends queue_head's search.
CREATE OR REPLACE FUNCTION pgcoord.queue_head(p_key bigint, p_ticket bigint, p_shared boolean) RETURNS boolean
LANGUAGE sql STABLE AS $$
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
$$;

CREATE OR REPLACE FUNCTION pgcoord.queue_enter(p_key bigint, p_shared boolean, p_member_id text, p_age_us bigint,
                                               OUT ticket bigint, OUT head boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue q
    WHERE q.key = p_key AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid));
    INSERT INTO pgcoord.wait_queue (key, shared, member_id, since)
    VALUES (p_key, p_shared, p_member_id, clock_timestamp() - make_interval(secs => greatest(p_age_us, 0) / 1e6))
    RETURNING wait_queue.ticket INTO ticket;
    head := pgcoord.queue_head(p_key, ticket, p_shared);
END
$$;
