-- Back to version 2's live_members, without stopped_at and member_key.
DROP VIEW pgcoord.live_members;

CREATE VIEW pgcoord.live_members AS
SELECT m.member_id, m.prefix, m.agent_id, m.hostname, m.pid, m.started_at,
       m.last_heartbeat, m.heartbeat_interval, m.session_tag, m.backend_pid,
       now() - m.last_heartbeat AS heartbeat_age
FROM pgcoord.members m
WHERE m.stopped_at IS NULL
  AND EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
        AND l.objid::bigint = (m.member_key & 4294967295));
