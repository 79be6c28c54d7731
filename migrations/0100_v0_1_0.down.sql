-- Undoes 0100_v0_1_0.up.sql: every object of schema pgcoord but the schema
-- itself and golang-migrate's table in it. IF EXISTS throughout, so a down
-- that stopped part-way can be run again. No CASCADE: an object of the
-- application's that depends on one of these (a view over held_locks)
-- stops the down rather than being dropped with it.
DROP TABLE IF EXISTS pgcoord.long_waits;
DROP FUNCTION IF EXISTS pgcoord.xact_fence(bigint);
DROP FUNCTION IF EXISTS pgcoord.xact_lock(bigint, boolean, integer);
DROP VIEW IF EXISTS pgcoord.live_group_members;
DROP TABLE IF EXISTS pgcoord.group_members;
DROP VIEW IF EXISTS pgcoord.semaphore_holders;
DROP FUNCTION IF EXISTS pgcoord.semaphore_slot_key(text, integer, integer);
DROP TABLE IF EXISTS pgcoord.semaphores;
DROP VIEW IF EXISTS pgcoord.leaders;
DROP FUNCTION IF EXISTS pgcoord.end_term(text, bigint);
DROP FUNCTION IF EXISTS pgcoord.proclaim(text, bigint, text);
DROP FUNCTION IF EXISTS pgcoord.begin_term(text, bigint, text, text, bigint);
DROP TABLE IF EXISTS pgcoord.elections;
DROP VIEW IF EXISTS pgcoord.held_locks;
DROP VIEW IF EXISTS pgcoord.live_members;
DROP TABLE IF EXISTS pgcoord.lock_since;
DROP FUNCTION IF EXISTS pgcoord.fence_ok(bigint, bigint);
DROP TABLE IF EXISTS pgcoord.fences;
DROP FUNCTION IF EXISTS pgcoord.wait_lock_shared(bigint, integer);
DROP FUNCTION IF EXISTS pgcoord.wait_lock(bigint, integer);
DROP TABLE IF EXISTS pgcoord.locks;
DROP TABLE IF EXISTS pgcoord.members;
DROP FUNCTION IF EXISTS pgcoord.next_token();
DROP FUNCTION IF EXISTS pgcoord.raise_token_floor();
DROP FUNCTION IF EXISTS pgcoord.timeline_floor();
DROP SEQUENCE IF EXISTS pgcoord.fencing_token;
DROP FUNCTION IF EXISTS pgcoord.lock_key(text);
