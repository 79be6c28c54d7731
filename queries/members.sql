-- name: TryMemberLock :one
-- The member lock uses the two-int advisory key space, which never meets the
-- one-bigint keys of named locks.
SELECT pg_try_advisory_lock(sqlc.arg(key1)::integer, sqlc.arg(key2)::integer) AS ok;

-- name: RegisterMember :exec
-- Start (restart = true) begins a new life for the member row; a reconnect
-- (restart = false) keeps its started_at.
INSERT INTO pgcoord.members AS m (member_id, prefix, agent_id, hostname, pid,
                                  heartbeat_interval, session_tag, member_key, backend_pid)
VALUES (sqlc.arg(member_id), sqlc.arg(prefix), sqlc.arg(agent_id), sqlc.arg(hostname),
        sqlc.arg(pid), make_interval(secs => sqlc.arg(heartbeat_seconds)::float8),
        sqlc.arg(session_tag), sqlc.arg(member_key), pg_backend_pid())
ON CONFLICT (member_id) DO UPDATE SET
    prefix             = excluded.prefix,
    agent_id           = excluded.agent_id,
    hostname           = excluded.hostname,
    pid                = excluded.pid,
    heartbeat_interval = excluded.heartbeat_interval,
    session_tag        = excluded.session_tag,
    member_key         = excluded.member_key,
    backend_pid        = excluded.backend_pid,
    started_at         = CASE WHEN sqlc.arg(restart)::boolean OR m.stopped_at IS NOT NULL
                              THEN now() ELSE m.started_at END,
    last_heartbeat     = now(),
    stopped_at         = NULL;

-- name: Heartbeat :execrows
-- Zero rows means the row was deleted or marked stopped behind our back.
UPDATE pgcoord.members SET last_heartbeat = now()
WHERE member_id = sqlc.arg(member_id) AND stopped_at IS NULL;

-- name: MarkStopped :exec
UPDATE pgcoord.members SET stopped_at = now() WHERE member_id = sqlc.arg(member_id);

-- name: GetMember :one
SELECT member_id, prefix, agent_id, hostname, pid, started_at, last_heartbeat,
       stopped_at, heartbeat_interval, session_tag, member_key, backend_pid
FROM pgcoord.members WHERE member_id = sqlc.arg(member_id);

-- name: ListMembers :many
SELECT m.member_id, m.prefix, m.agent_id, m.hostname, m.pid, m.started_at,
       m.last_heartbeat, m.stopped_at,
       EXISTS (SELECT 1 FROM pgcoord.live_members l WHERE l.member_id = m.member_id)::boolean AS live
FROM pgcoord.members m
ORDER BY m.member_id;

-- name: BackendPID :one
SELECT pg_backend_pid()::integer AS pid;

-- name: HoldsMemberLock :one
-- True when this very backend holds the member lock: false behind a
-- transaction-pooling proxy, where statements land on other backends.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
      AND l.pid = pg_backend_pid()
      AND l.classid::bigint = (sqlc.arg(key1)::integer::bigint & 4294967295)
      AND l.objid::bigint = (sqlc.arg(key2)::integer::bigint & 4294967295)
)::boolean AS held;

-- name: LockMember :exec
-- Waits for the member lock. Stop takes it before marking the member
-- stopped: a statement of a cancelled control session may still be running
-- on the server (a reconnect's RegisterMember, say) and must not land after.
SELECT pg_advisory_lock(sqlc.arg(key1)::integer, sqlc.arg(key2)::integer);
