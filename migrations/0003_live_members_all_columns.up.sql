-- live_members becomes the whole members row of every running member (SPEC:
-- "the members rows of running members"), so a query written against
-- members, stopped_at and member_key included, works against it unchanged.
-- heartbeat_age stays as the last column. A view's columns cannot be
-- reordered in place, hence DROP and CREATE.
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
