DROP VIEW pgcoord.live_group_members;
DROP VIEW pgcoord.live_members;

ALTER TABLE pgcoord.members DROP COLUMN IF EXISTS lease;

CREATE VIEW pgcoord.live_members AS
SELECT m.*,
       now() - m.last_heartbeat AS heartbeat_age
FROM pgcoord.members m
WHERE m.stopped_at IS NULL
  AND EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
        AND l.objid::bigint = (m.member_key & 4294967295));

CREATE VIEW pgcoord.live_group_members AS
SELECT g.group_name, g.member_id, g.capabilities, g.joined_at, g.updated_at,
       m.prefix, m.agent_id, m.hostname, m.pid, m.started_at, m.last_heartbeat
FROM pgcoord.group_members g
JOIN pgcoord.live_members m ON m.member_id = g.member_id;
