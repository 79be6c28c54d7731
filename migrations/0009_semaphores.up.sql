-- Semaphores (Coordinator.Semaphore): at most `slots` holders of a name.
-- Each holder holds one of the slot locks
-- 'pgcoord.semaphore:' || semaphore || '/' || slots || '#' || i, for i in
-- 0 .. slots - 1, through its member's sessions like any lock: a killed
-- holder's slot is free at once. The limit is part of the slot names, so
-- holders with different limits never share slots; this table lists each
-- limit a semaphore was used with, so that a holder can check, once it
-- holds its slot, that nobody holds a slot of another limit (they would
-- disagree on how many may hold: ErrLimitMismatch).
CREATE TABLE pgcoord.semaphores (
    semaphore  text        NOT NULL,
    slots      integer     NOT NULL CHECK (slots > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (semaphore, slots)
);

-- semaphore_slot_key is the advisory-lock key of slot i of a semaphore
-- used with the given number of slots.
CREATE FUNCTION pgcoord.semaphore_slot_key(semaphore text, slots integer, i integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT pgcoord.lock_key('pgcoord.semaphore:' || semaphore || '/' || slots || '#' || i)
$$;

-- semaphore_holders: every held slot of every semaphore, for people.
CREATE VIEW pgcoord.semaphore_holders AS
SELECT s.semaphore, s.slots AS "limit", g.i AS slot, h.member_id, h.since, h.pid
FROM pgcoord.semaphores s
CROSS JOIN LATERAL generate_series(0, s.slots - 1) AS g(i)
JOIN pgcoord.held_locks h ON h.key = pgcoord.semaphore_slot_key(s.semaphore, s.slots, g.i) AND h.granted;
