-- name: PruneMembers :execrows
-- Deletes the rows of members stopped, or silent (never stopped: crashed or
-- cut off), for longer than the retention. A member whose member lock is
-- held is running (or registering again) and is never deleted; one that
-- comes back after its row went is written anew by its reconnect.
DELETE FROM pgcoord.members m
WHERE coalesce(m.stopped_at, m.last_heartbeat) < now() - make_interval(secs => sqlc.arg(retention_seconds)::float8)
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 2
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
        AND l.objid::bigint = (m.member_key & 4294967295));

-- name: PruneLockNames :execrows
-- Deletes the registrations of names not registered (see RegisterLockName)
-- for longer than the retention whose key nobody holds or waits for. A
-- coordinator registers a name again when its cache entry is older than
-- nameCacheTTL, far less than the shortest retention, so a name still in
-- use always has a recent last_used; a registration racing this delete
-- either refreshes last_used first (the row then no longer matches) or
-- inserts the row again after it.
-- Rows locked by a transaction are skipped, not waited for: a registration
-- locks its row (ON CONFLICT does, whether or not it updates it), so the
-- name is in use, and a control batch (ctlbatch.go) holds the rows of all
-- its registrations, taken in key order, until it ends. Waiting, the delete,
-- which locks rows in an order of its own (the heap's, or from PostgreSQL
-- 16 on a hash table's: Hash Right Anti Join), closed a cycle with such a
-- batch, and one of them failed with a deadlock (SQLSTATE 40P01).
DELETE FROM pgcoord.locks r
WHERE r.key IN (
    SELECT o.key FROM pgcoord.locks o
    WHERE o.last_used < now() - make_interval(secs => sqlc.arg(retention_seconds)::float8)
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_locks l
          WHERE l.locktype = 'advisory' AND l.objsubid = 1
            AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
            AND l.classid::bigint = ((o.key >> 32) & 4294967295)
            AND l.objid::bigint = (o.key & 4294967295))
    FOR UPDATE SKIP LOCKED);

-- name: PruneGroupMembers :execrows
-- Deletes the group memberships of members whose row is gone (pruned:
-- stopped or silent for longer than the retention). A running member's
-- row is never pruned, so its memberships stay; live_group_members never
-- showed these rows anyway.
DELETE FROM pgcoord.group_members g
WHERE NOT EXISTS (SELECT 1 FROM pgcoord.members m WHERE m.member_id = g.member_id);

-- name: PruneFences :execrows
-- Deletes the recorded tokens (Config.Fencing, AcquireFencedTx) of keys
-- whose last token is older than the retention and which nobody holds or
-- waits for now. A holder's fence_ok needs its key's row, and it holds the
-- key; a holder that lost its lock unaware finds no row, and fence_ok
-- refuses its write, as it would with a newer token there. Tokens come from
-- one sequence, so the next holder's token is newer whether or not the row
-- is there. Rows locked by a transaction (fence_ok's FOR SHARE, an acquire
-- recording its token) are skipped, not waited for.
DELETE FROM pgcoord.fences f
WHERE f.key IN (
    SELECT o.key FROM pgcoord.fences o
    WHERE o.updated_at < now() - make_interval(secs => sqlc.arg(retention_seconds)::float8)
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_locks l
          WHERE l.locktype = 'advisory' AND l.objsubid = 1
            AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
            AND l.classid::bigint = ((o.key >> 32) & 4294967295)
            AND l.objid::bigint = (o.key & 4294967295))
    FOR UPDATE SKIP LOCKED);

-- name: PruneSemaphoreLimits :execrows
-- Deletes the limits of semaphores not recorded (RegisterSemaphoreLimit)
-- for longer than the retention of which nobody holds or waits for a slot.
-- A holder checks the others' limits once it holds its slot
-- (OtherSemaphoreLimits), so the row of a limit whose slot is held must
-- stay, and does; a Semaphore in use records its limit again every ten
-- minutes and when it takes a slot after a long wait, far within the
-- shortest retention.
DELETE FROM pgcoord.semaphores s
WHERE s.last_used < now() - make_interval(secs => sqlc.arg(retention_seconds)::float8)
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 1
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND ((l.classid::bigint << 32) | l.objid::bigint) IN (
            SELECT pgcoord.semaphore_slot_key(s.semaphore, s.slots, g)
            FROM generate_series(0, s.slots - 1) AS g));

-- name: PruneElections :execrows
-- Deletes the recorded last terms of elections whose term began before the
-- retention, whose lock nobody holds or waits for, and whose leader has
-- not been heard from within the retention (its member row stopped or
-- silent that long, or gone). A new leader reads its predecessor's row
-- to decide how long to give it (grace.go): a predecessor silent for an
-- hour or more acts on nothing (its lease is seconds), and finding no row
-- means no grace, as finding its member stopped does. Tokens come from one
-- sequence, so the next term's token is newer whether or not the row is
-- there.
DELETE FROM pgcoord.elections e
WHERE e.since < now() - make_interval(secs => sqlc.arg(retention_seconds)::float8)
  AND NOT EXISTS (
      SELECT 1 FROM pgcoord.members m
      WHERE m.member_id = e.member_id
        AND coalesce(m.stopped_at, m.last_heartbeat) >= now() - make_interval(secs => sqlc.arg(retention_seconds)::float8))
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 1
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((e.key >> 32) & 4294967295)
        AND l.objid::bigint = (e.key & 4294967295));
