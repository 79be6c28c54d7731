-- Least-privilege grants for applications that use pgcoord with
-- SkipMigrations (the schema is migrated by another role: `pgcoord migrate`,
-- golang-migrate's CLI, or a coordinator started once as the owner).
--
-- Run it as the role that owns schema pgcoord (or a superuser), after the
-- migrations, in the application's database:
--
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f docs/grants.sql
--
-- It creates the group role pgcoord_app (NOLOGIN) and grants it what a
-- coordinator, every primitive and AcquireTx use; it can be run again (after
-- a new migration, say). Then give it to the application's login role:
--
--     GRANT pgcoord_app TO my_app;
--
-- The role gets no DDL right: it cannot create, alter or drop anything in
-- the schema. TestGrantsScript runs this file and then a coordinator, every
-- primitive and AcquireTx as a role that has only these grants.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgcoord_app') THEN
    CREATE ROLE pgcoord_app NOLOGIN;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA pgcoord TO pgcoord_app;

-- A coordinator: its member row, name registrations (UPDATE of last_used,
-- DELETE for pruning: without DELETE, set Config.Retention to -1 and run
-- `pgcoord prune` as another role), hold start times, deadlock detection,
-- wait order across members (wait_queue),
-- the fencing token sequence and the functions of a try and a wait.
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.members TO pgcoord_app;
GRANT SELECT, INSERT, UPDATE (last_used), DELETE ON pgcoord.locks TO pgcoord_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.lock_since TO pgcoord_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.long_waits TO pgcoord_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.wait_queue TO pgcoord_app;
GRANT SELECT ON pgcoord.live_members, pgcoord.held_locks, pgcoord.schema_migrations TO pgcoord_app;
GRANT USAGE ON SEQUENCE pgcoord.fencing_token TO pgcoord_app;
GRANT EXECUTE ON FUNCTION pgcoord.lock_key(text), pgcoord.wait_lock(bigint, integer),
  pgcoord.next_token() TO pgcoord_app;

-- Config.Fencing (pgcoord.fence_ok), and AcquireFencedTx (DELETE for
-- pruning the tokens of names unused past the retention).
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.fences TO pgcoord_app;
GRANT EXECUTE ON FUNCTION pgcoord.fence_ok(bigint, bigint) TO pgcoord_app;

-- Shared locks.
GRANT EXECUTE ON FUNCTION pgcoord.wait_lock_shared(bigint, integer) TO pgcoord_app;

-- Elections (DELETE for pruning the last terms of elections unused past the
-- retention).
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.elections TO pgcoord_app;
GRANT SELECT ON pgcoord.leaders TO pgcoord_app;
GRANT EXECUTE ON FUNCTION pgcoord.take_term(text, bigint, text, text, bigint),
  pgcoord.proclaim(text, bigint, text), pgcoord.end_term(text, bigint) TO pgcoord_app;

-- Semaphores (UPDATE of last_used when a limit is recorded again, DELETE
-- for pruning the limits of semaphores unused past the retention).
GRANT SELECT, INSERT, UPDATE (last_used), DELETE ON pgcoord.semaphores TO pgcoord_app;
GRANT SELECT ON pgcoord.semaphore_holders TO pgcoord_app;
GRANT EXECUTE ON FUNCTION pgcoord.semaphore_slot_key(text, integer, integer) TO pgcoord_app;

-- Groups.
GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.group_members TO pgcoord_app;
GRANT SELECT ON pgcoord.live_group_members TO pgcoord_app;

-- Transaction locks (AcquireTx, AcquireSharedTx, AcquireFencedTx, FenceTx).
GRANT EXECUTE ON FUNCTION pgcoord.xact_lock(bigint, boolean, integer),
  pgcoord.xact_fence(bigint) TO pgcoord_app;
