DROP FUNCTION IF EXISTS pgcoord.xact_fence(bigint);
DROP FUNCTION IF EXISTS pgcoord.xact_lock(bigint, boolean, integer);
