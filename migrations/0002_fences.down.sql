DROP FUNCTION IF EXISTS pgcoord.fence_ok(bigint, bigint);
DROP TABLE IF EXISTS pgcoord.fences;
