DROP FUNCTION IF EXISTS pgcoord.wait_lock_shared(bigint, integer);
