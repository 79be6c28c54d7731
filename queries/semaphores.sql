-- name: RegisterSemaphoreLimit :exec
-- Records that semaphore is used with this many slots (see
-- pgcoord.semaphores), and that it is used now: last_used keeps the row
-- from being pruned (PruneSemaphoreLimits). A row refreshed within the
-- minute is only read, not even tried (ON CONFLICT locks the conflicting
-- row whether or not it updates it, as RegisterLockName says), so
-- Semaphores made afresh for each Acquire cost no write and no row lock.
INSERT INTO pgcoord.semaphores AS s (semaphore, slots)
SELECT sqlc.arg(semaphore)::text, sqlc.arg(slots)::integer
WHERE NOT EXISTS (
    SELECT 1 FROM pgcoord.semaphores c
    WHERE c.semaphore = sqlc.arg(semaphore)::text AND c.slots = sqlc.arg(slots)::integer
      AND c.last_used >= now() - interval '1 minute')
ON CONFLICT (semaphore, slots) DO UPDATE SET last_used = now()
WHERE s.last_used < now() - interval '1 minute';

-- name: OtherSemaphoreLimits :many
-- The other limits semaphore is held with now: a slot of another limit is
-- held (granted) by someone. Run by a holder once it holds its slot.
SELECT s.slots
FROM pgcoord.semaphores s
WHERE s.semaphore = sqlc.arg(semaphore) AND s.slots <> sqlc.arg(slots)
  AND EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND ((l.classid::bigint << 32) | l.objid::bigint) IN (
            SELECT pgcoord.semaphore_slot_key(s.semaphore, s.slots, g)
            FROM generate_series(0, s.slots - 1) AS g))
ORDER BY s.slots;
