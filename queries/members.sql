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
       stopped_at, heartbeat_interval, session_tag, member_key, backend_pid, lease
FROM pgcoord.members WHERE member_id = sqlc.arg(member_id);

-- name: ListMembers :many
SELECT m.member_id, m.prefix, m.agent_id, m.hostname, m.pid, m.started_at,
       m.last_heartbeat, m.stopped_at,
       EXISTS (SELECT 1 FROM pgcoord.live_members l WHERE l.member_id = m.member_id)::boolean AS live
FROM pgcoord.members m
ORDER BY m.member_id;

-- name: SessionIdentity :one
-- Run once as each session connects, in its one round trip: its backend pid
-- (the pooler check compares them) and which server it reached. A standby
-- is in recovery. reused: the backend has prepared statements or holds
-- advisory locks, which a new session never has (these statements run on
-- the simple protocol): a pooler gave us a server session another client
-- used, without resetting it (see reusedBackend). A promoted standby keeps
-- its primary's system identifier
-- and writes on a new timeline: that of the WAL insert position, whose WAL
-- file name starts with it (8 hex digits, read in Go), and which is the new
-- one as soon as the server takes writes (pg_control_checkpoint() shows it
-- only after the next checkpoint). pg_walfile_name fails in recovery.
SELECT pg_backend_pid()::integer AS pid,
       pg_is_in_recovery()::boolean AS in_recovery,
       c.system_identifier::bigint AS system_id,
       (CASE WHEN pg_is_in_recovery() THEN ''
             ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END)::text AS wal_file,
       (EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements)
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'))::boolean AS reused
FROM pg_control_system() c;

-- name: PrepareSession :one
-- SessionIdentity and, in the same round trip, the bounds of a session that
-- may hold locks (PostgreSQL 14+). The server ends a session that stays
-- idle this long (a frozen or cut-off client), freeing its locks; the
-- heartbeat keeps live ones busy. tcp_user_timeout bounds how long the
-- server keeps sending to a client that stopped acknowledging (a waiter cut
-- off just as its lock was granted would otherwise hold it until TCP gives
-- up, many minutes later).
-- synchronous_commit: a server set to off would answer a commit before its
-- WAL is written, and a crash (same timeline: no token floor helps) would
-- take back what the session's statements did: the fencing sequence's
-- advance (nextval WAL-logs it 32 values ahead, in the transaction that
-- runs it: tokens already handed out would be handed out again) and the
-- fence rows (a stale holder's guarded write would land again). local
-- waits for the local flush only; a stronger setting (on, remote_write,
-- remote_apply) is kept.
SELECT pg_backend_pid()::integer AS pid,
       pg_is_in_recovery()::boolean AS in_recovery,
       c.system_identifier::bigint AS system_id,
       (CASE WHEN pg_is_in_recovery() THEN ''
             ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END)::text AS wal_file,
       set_config('idle_session_timeout', sqlc.arg(timeout_ms)::text, false)::text AS idle_session_timeout,
       set_config('tcp_user_timeout', sqlc.arg(timeout_ms)::text, false)::text AS tcp_user_timeout,
       (CASE WHEN current_setting('synchronous_commit') = 'off'
             THEN set_config('synchronous_commit', 'local', false)
             ELSE current_setting('synchronous_commit') END)::text AS synchronous_commit,
       (EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements)
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'))::boolean AS reused
FROM pg_control_system() c;

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

-- name: SetLockTimeout :exec
-- Bounds every lock wait of the control session (see session.detached):
-- none of its statements may wait behind an application's transaction, or
-- the heartbeat would wait too.
SELECT set_config('lock_timeout', sqlc.arg(timeout_ms)::text, false);

-- name: ForgetStoppedMember :execrows
-- Deletes a stopped member's row at once: what the pgcoord command does
-- for its own member when `run` or `elect` ends (each is one process run,
-- with a member id of its own: kept for the retention, the rows would pile
-- up, one per run). Never while its member lock is held.
DELETE FROM pgcoord.members m
WHERE m.member_id = sqlc.arg(member_id) AND m.stopped_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 2
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
        AND l.objid::bigint = (m.member_key & 4294967295));
