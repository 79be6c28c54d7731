DROP VIEW IF EXISTS pgcoord.live_group_members;
DROP TABLE IF EXISTS pgcoord.group_members;
