DROP VIEW IF EXISTS pgcoord.held_locks;
DROP VIEW IF EXISTS pgcoord.live_members;
DROP FUNCTION IF EXISTS pgcoord.wait_lock(bigint, integer);
DROP TABLE IF EXISTS pgcoord.locks;
DROP TABLE IF EXISTS pgcoord.members;
DROP SEQUENCE IF EXISTS pgcoord.fencing_token;
DROP FUNCTION IF EXISTS pgcoord.lock_key(text);
