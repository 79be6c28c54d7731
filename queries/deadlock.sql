-- name: CheckLongWaits :many
-- One deadlock check of a member (see deadlock.go): it publishes the
-- member's long waits (one array element per wait; since is set once,
-- from the wait's age on the server's clock), deletes its rows of waits
-- that ended and rows nobody refreshed for a minute (a member that died),
-- and returns every fresh long wait, its own included.
WITH input AS (
    SELECT w.wait_id, w.i,
           coalesce((sqlc.arg(for_ends)::integer[])[w.i - 1], 0) AS for_lo,
           (sqlc.arg(for_ends)::integer[])[w.i] AS for_hi,
           coalesce((sqlc.arg(held_ends)::integer[])[w.i - 1], 0) AS held_lo,
           (sqlc.arg(held_ends)::integer[])[w.i] AS held_hi
    FROM unnest(sqlc.arg(wait_ids)::bigint[]) WITH ORDINALITY AS w(wait_id, i)
), mine AS (
    -- A wait's keys are a slice of the flat arrays for_keys and
    -- held_keys: for_ends and held_ends give where each wait's slice ends.
    SELECT n.wait_id,
           (sqlc.arg(goroutines)::bigint[])[n.i] AS goroutine,
           (sqlc.arg(names)::text[])[n.i] AS name,
           (sqlc.arg(for_keys)::bigint[])[n.for_lo + 1 : n.for_hi] AS waits_for,
           (sqlc.arg(shared)::boolean[])[n.i] AS shared,
           (sqlc.arg(age_ms)::bigint[])[n.i] AS age_ms,
           h.held_keys, h.held_shared
    FROM input n
    -- A hold counts only while the server has it: its backend (held_pids)
    -- holds the key's advisory lock. A hold whose session the server ended,
    -- which the member has not noticed yet, blocks nobody; counted, it
    -- made a member wait "for itself" (see
    -- TestDeadlockIgnoresHoldsTheServerFreed).
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(x.k ORDER BY x.o), '{}') AS held_keys,
               coalesce(array_agg(x.sh ORDER BY x.o), '{}') AS held_shared
        FROM (SELECT i AS o,
                     (sqlc.arg(held_keys)::bigint[])[i] AS k,
                     (sqlc.arg(held_shared)::boolean[])[i] AS sh,
                     (sqlc.arg(held_pids)::integer[])[i] AS pid
              FROM generate_series(n.held_lo + 1, coalesce(n.held_hi, 0)) AS i) x
        WHERE EXISTS (
            SELECT 1 FROM pg_catalog.pg_locks l
            WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.pid = x.pid
              AND l.classid::bigint = ((x.k >> 32) & 4294967295)
              AND l.objid::bigint = (x.k & 4294967295))
    ) h
), gone AS (
    -- SKIP LOCKED: two members sweeping the same dead rows never wait for
    -- each other.
    DELETE FROM pgcoord.long_waits l
    WHERE (l.member_id, l.wait_id) IN (
        SELECT o.member_id, o.wait_id FROM pgcoord.long_waits o
        WHERE (o.member_id = sqlc.arg(member_id)::text AND o.wait_id NOT IN (SELECT m.wait_id FROM mine m))
           OR o.updated_at < now() - interval '1 minute'
        FOR UPDATE SKIP LOCKED)
), put AS (
    INSERT INTO pgcoord.long_waits AS l
        (member_id, wait_id, goroutine, name, waits_for, shared, since, held_keys, held_shared, updated_at)
    SELECT sqlc.arg(member_id)::text, m.wait_id, m.goroutine, m.name, m.waits_for, m.shared,
           now() - m.age_ms * interval '1 millisecond', m.held_keys, m.held_shared, now()
    FROM mine m
    ON CONFLICT (member_id, wait_id) DO UPDATE
        SET held_keys = excluded.held_keys, held_shared = excluded.held_shared, updated_at = excluded.updated_at
    RETURNING l.member_id, l.wait_id, l.goroutine, l.name, l.waits_for, l.shared, l.since, l.held_keys, l.held_shared
)
SELECT p.member_id, p.wait_id, p.goroutine, p.name, p.waits_for, p.shared, p.since, p.held_keys, p.held_shared
FROM put p
UNION ALL
SELECT l.member_id, l.wait_id, l.goroutine, l.name, l.waits_for, l.shared, l.since, l.held_keys, l.held_shared
FROM pgcoord.long_waits l
WHERE l.member_id <> sqlc.arg(member_id)::text AND l.updated_at > now() - interval '3 seconds'
  -- Only while the member lives: its member lock is held. A member that
  -- crashed leaves its rows fresh for up to 3 s, its holds gone with its
  -- sessions; read, a row "holds x, waits for y" made a wait for x that
  -- holds y a deadlock (TestNoDeadlockFromDeadMembersRows).
  AND EXISTS (
      SELECT 1 FROM pgcoord.members m
      JOIN pg_catalog.pg_locks k
        ON k.locktype = 'advisory' AND k.objsubid = 2 AND k.granted
       AND k.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
       AND k.classid::bigint = ((m.member_key >> 32) & 4294967295)
       AND k.objid::bigint = (m.member_key & 4294967295)
      WHERE m.member_id = l.member_id);

-- name: ForgetLongWaits :exec
-- Stop: no wait of the member is under way, and its holds are released.
-- Its rows go now rather than be read as live waits, with the holds they
-- list, for up to 3 s, which made a wait of another member for one of
-- those names part of a cycle that no longer was
-- (TestNoDeadlockFromStoppedMembersRows).
DELETE FROM pgcoord.long_waits WHERE member_id = sqlc.arg(member_id)::text;
