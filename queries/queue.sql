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
-- A member's control session reconnected: the tickets of its waits under
-- way are its again. Only those: any other row of the member (a wait given
-- up whose return is pending, a ticket whose reply the old connection
-- lost, a previous life's) stays stamped with the old backend, dead, and
-- stands in nobody's way.
UPDATE pgcoord.wait_queue SET backend_pid = pg_backend_pid()
WHERE member_id = sqlc.arg(member_id) AND ticket = ANY(sqlc.arg(tickets)::bigint[]);

-- name: QueueForget :exec
-- Start and Stop: no wait of the member is under way, so every ticket with
-- its id is a previous life's (or this one's, at Stop), given back now.
DELETE FROM pgcoord.wait_queue WHERE member_id = sqlc.arg(member_id);

-- name: ListenQueue :exec
-- A ticket given back while others wait for its key notifies this channel
-- with the key (see queue_leave).
LISTEN pgcoord_queue;

-- name: UnlistenQueue :exec
UNLISTEN pgcoord_queue;

-- name: PruneDeadTickets :execrows
-- Deletes the tickets whose backend is gone (their member died; a backend
-- of the same pid with another application_name is another's): they
-- stand in nobody's way, and queue_enter deletes those of a key it queues
-- for, but a key nobody waits for again would keep them.
DELETE FROM pgcoord.wait_queue q
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid) a
                  WHERE q.app_name IS NULL OR a.application_name = q.app_name);
