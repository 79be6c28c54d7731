-- held_locks as migration 1 made it.
CREATE OR REPLACE VIEW pgcoord.held_locks AS
SELECT r.name,
       k.key,
       CASE WHEN l.mode = 'ExclusiveLock' THEN 'exclusive' ELSE 'shared' END AS mode,
       m.member_id,
       l.granted,
       CASE WHEN l.granted THEN a.state_change ELSE l.waitstart END AS since,
       l.pid
FROM pg_catalog.pg_locks l
CROSS JOIN LATERAL (SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS key) k
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pgcoord.members m ON m.session_tag = a.application_name AND m.stopped_at IS NULL
LEFT JOIN pgcoord.locks r ON r.key = k.key
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
  AND (m.member_id IS NOT NULL OR r.name IS NOT NULL);

DROP TABLE pgcoord.lock_since;

ALTER TABLE pgcoord.locks DROP COLUMN last_used;
