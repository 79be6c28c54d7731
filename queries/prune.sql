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
DELETE FROM pgcoord.locks r
WHERE r.last_used < now() - make_interval(secs => sqlc.arg(retention_seconds)::float8)
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 1
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((r.key >> 32) & 4294967295)
        AND l.objid::bigint = (r.key & 4294967295));

-- name: PruneGroupMembers :execrows
-- Deletes the group memberships of members whose row is gone (pruned:
-- stopped or silent for longer than the retention). A running member's
-- row is never pruned, so its memberships stay; live_group_members never
-- showed these rows anyway.
DELETE FROM pgcoord.group_members g
WHERE NOT EXISTS (SELECT 1 FROM pgcoord.members m WHERE m.member_id = g.member_id);
