-- A member's lease (SessionTimeout less two heartbeats), recorded by a
-- leader with its term: a leader whose heartbeat has not succeeded for that
-- long leads no more, from its first look (see beatlease.go), so a new
-- leader that finds its predecessor's member lock free and its heartbeat
-- older than this skips the grace it otherwise gives a predecessor that did
-- not resign. Null for members that never recorded it: they get the full
-- grace.
ALTER TABLE pgcoord.members ADD COLUMN IF NOT EXISTS lease interval;

-- live_members stays the whole members row (then heartbeat_age): a view's
-- columns cannot be reordered in place, hence DROP and CREATE, with the view
-- that reads it. (Grants on the two views must be given again.)
DROP VIEW pgcoord.live_group_members;
DROP VIEW pgcoord.live_members;

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
