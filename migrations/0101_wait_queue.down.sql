DROP FUNCTION IF EXISTS pgcoord.queue_leave(bigint, bigint);
DROP FUNCTION IF EXISTS pgcoord.queue_enter(bigint, boolean, text, bigint);
DROP FUNCTION IF EXISTS pgcoord.queue_head(bigint, bigint, boolean);
DROP FUNCTION IF EXISTS pgcoord.queue_lock(bigint);
DROP TABLE IF EXISTS pgcoord.wait_queue;
