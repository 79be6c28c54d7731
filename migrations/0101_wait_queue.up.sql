-- Wait order across coordinators (docs/waits.md). A blocking acquire whose
-- wait outlasts queueAfter (100 ms: on the server, beyond its session
-- budget, or behind goroutines of its own process) takes a ticket here,
-- stamped with when the wait began. A member's waits
-- for a key stand at the place of its earliest ticket (its process keeps
-- their order among themselves), and a wait goes on to wait on the server,
-- or to try, only once no live ticket of another member from before that
-- place stands in its way: any, for an exclusive wait; an exclusive one,
-- for a shared wait (readers behind a queued writer wait). The ticket goes
-- when the wait ends. Short waits never write. UNLOGGED: tickets describe
-- waits of live backends, which a crash or failover ends anyway.
CREATE UNLOGGED TABLE pgcoord.wait_queue (
    ticket      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         bigint      NOT NULL,
    shared      boolean     NOT NULL,
    member_id   text        NOT NULL,
    -- backend_pid is the waiting member's control session: a ticket whose
    -- backend is gone (the member died, or its control session is being
    -- replaced) stands in nobody's way, and is deleted by the next ticket
    -- taken for its key. A member stamps its tickets anew when its control
    -- session reconnects.
    backend_pid integer     NOT NULL DEFAULT pg_backend_pid(),
    -- since is when the wait began (the server's clock less the wait's age
    -- as its client measured it), which orders the queue; ticket breaks ties.
    since       timestamptz NOT NULL
);

CREATE INDEX wait_queue_key ON pgcoord.wait_queue (key, ticket);

-- queue_lock serialises the tickets of one key: a ticket taken while
-- another is given back either sees it gone or is seen by it (and then
-- notified), never neither. The two-int lock space is also the wait
-- markers' (see the Unlock query): the halves are XORed with a constant so
-- that a key's queue lock is not its own marker.
CREATE FUNCTION pgcoord.queue_lock(p_key bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(((p_key >> 32)::integer) # 1364543299,
                                 (p_key::bit(32)::integer) # 1364543299)
$$;

-- queue_head reports whether no live ticket of another member stands in
-- the way of p_ticket's wait for p_key (shared or not): none from before
-- the earliest ticket its member has for p_key.
CREATE FUNCTION pgcoord.queue_head(p_key bigint, p_ticket bigint, p_shared boolean) RETURNS boolean
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
          AND q.backend_pid IN (SELECT pid FROM pg_catalog.pg_stat_activity))
$$;

-- queue_enter takes a ticket for p_key on behalf of the calling session's
-- member, for a wait that began p_age_us microseconds ago, and says whether
-- it is at the head already. Each statement of a PL/pgSQL function sees
-- what committed before it began: the head is judged after the key's
-- queue lock is held.
CREATE FUNCTION pgcoord.queue_enter(p_key bigint, p_shared boolean, p_member_id text, p_age_us bigint,
                                    OUT ticket bigint, OUT head boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue q
    WHERE q.key = p_key AND q.backend_pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_activity);
    INSERT INTO pgcoord.wait_queue (key, shared, member_id, since)
    VALUES (p_key, p_shared, p_member_id, clock_timestamp() - make_interval(secs => greatest(p_age_us, 0) / 1e6))
    RETURNING wait_queue.ticket INTO ticket;
    head := pgcoord.queue_head(p_key, ticket, p_shared);
END
$$;

-- queue_leave gives a ticket back, and notifies pgcoord_queue with the key
-- when other tickets wait for it (only then: a NOTIFY serialises commits).
CREATE FUNCTION pgcoord.queue_leave(p_key bigint, p_ticket bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgcoord.queue_lock(p_key);
    DELETE FROM pgcoord.wait_queue WHERE ticket = p_ticket;
    IF EXISTS (SELECT 1 FROM pgcoord.wait_queue WHERE key = p_key) THEN
        PERFORM pg_notify('pgcoord_queue', p_key::text);
    END IF;
END
$$;
