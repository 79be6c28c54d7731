-- queue_head in PL/pgSQL, for its plans: a LANGUAGE sql function that is not
-- inlined (this one is not: a WITH query) is parsed and planned again at
-- every call, while PL/pgSQL keeps its statements' plans for the session.
-- make fleet (50 coordinators, 2 cores) measured queue_head at 1.3 ms of
-- server time a call, of which its query ran 0.4 ms, with 2.7 calls an
-- acquisition: the largest share of a saturated server's time. Same
-- answers: a ticket gone (or whose member has no ticket for the key) is
-- at the head.
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
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid)));
END
$$;

-- queue_leave wakes only the member whose turn it now is. It notified every
-- coordinator waiting for the key, each of which asked queue_head whether
-- its ticket was at the head now (make fleet: 2.7-3.1 queue_head calls an
-- acquisition, one per coordinator queued for the key), though after a
-- ticket goes only the member of the first live ticket left can have come
-- to the head when that ticket is exclusive: every other ticket is behind
-- it. The payload then names the member ("key member_id"), and the
-- listeners of other members ignore it. When the first live ticket is
-- shared, the shared tickets after it may all be at the head now: every
-- waiter is woken, as before (payload: the key alone). A ticket whose
-- backend died is skipped, as queue_head skips it; one that dies later is
-- found by the waits' own look every queueRecheck, as before.
CREATE OR REPLACE FUNCTION pgcoord.queue_leave(p_key bigint, p_ticket bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
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
$$;
