-- Wait order across coordinators: the tickets of pgcoord.wait_queue (see
-- migration 101 and queue.go).

-- name: QueueEnter :one
SELECT ticket::bigint AS ticket, head::boolean AS head
FROM pgcoord.queue_enter(sqlc.arg(key)::bigint, sqlc.arg(shared)::boolean, sqlc.arg(member_id)::text, sqlc.arg(age_us)::bigint);

-- name: QueueHead :one
SELECT pgcoord.queue_head(sqlc.arg(key)::bigint, sqlc.arg(ticket)::bigint, sqlc.arg(shared)::boolean)::boolean AS head;

-- name: QueueLeave :exec
SELECT pgcoord.queue_leave(sqlc.arg(key)::bigint, sqlc.arg(ticket)::bigint);

-- name: QueueRestamp :exec
-- A member's control session reconnected: its tickets are its again.
UPDATE pgcoord.wait_queue SET backend_pid = pg_backend_pid()
WHERE member_id = sqlc.arg(member_id);

-- name: ListenQueue :exec
-- A ticket given back while others wait for its key notifies this channel
-- with the key (see queue_leave).
LISTEN pgcoord_queue;

-- name: UnlistenQueue :exec
UNLISTEN pgcoord_queue;

-- name: PruneDeadTickets :execrows
-- Deletes the tickets whose backend is gone (their member died): they
-- stand in nobody's way, and queue_enter deletes those of a key it queues
-- for, but a key nobody waits for again would keep them.
DELETE FROM pgcoord.wait_queue
WHERE backend_pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_activity);
