-- pgcoord schema, version 1.
-- Everything lives in schema pgcoord so an application's own tables and
-- migrations are never touched. Holding a lock writes nothing here: who holds
-- what is read from pg_locks (see the held_locks view).

CREATE SCHEMA IF NOT EXISTS pgcoord;

-- lock_key turns a full lock name (Prefix+Name) into its advisory-lock key:
-- the first 8 bytes of SHA-256 of the UTF-8 name, big-endian, as a signed
-- bigint. The Go side (internal/hash) computes the same value; tests pin both.
CREATE FUNCTION pgcoord.lock_key(name text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT ('x' || encode(substr(sha256(convert_to(name, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint
$$;

-- Fencing tokens. A sequence survives a server crash without going backwards,
-- and nextval is taken while the lock is held, so successive holds of one
-- name always get larger tokens.
CREATE SEQUENCE pgcoord.fencing_token AS bigint MINVALUE 1;

-- members has one row per member id. A live member holds a two-int advisory
-- lock on member_key (a key space that never meets the one-bigint lock keys),
-- which is what makes a second live member with the same id fail to start.
CREATE TABLE pgcoord.members (
    member_id          text        PRIMARY KEY,
    prefix             text        NOT NULL DEFAULT '',
    agent_id           text        NOT NULL,
    hostname           text        NOT NULL DEFAULT '',
    pid                integer     NOT NULL DEFAULT 0,
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat     timestamptz NOT NULL DEFAULT now(),
    stopped_at         timestamptz,
    heartbeat_interval interval    NOT NULL DEFAULT '1 second',
    -- session_tag is the application_name of every session the member opens;
    -- it ties pg_stat_activity (and so pg_locks) rows to the member without a
    -- write per session.
    session_tag        text        NOT NULL,
    member_key         bigint      NOT NULL,
    -- backend_pid is the pid of the member's control session.
    backend_pid        integer
);

CREATE INDEX members_session_tag_idx ON pgcoord.members (session_tag);

-- locks is the name registry: it turns keys back into names and refuses a
-- second name whose key is already taken, so two names never share a lock.
CREATE TABLE pgcoord.locks (
    key        bigint      PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- wait_lock waits on the server for a lock for at most timeout_ms and returns
-- a fencing token, or 0 when the wait timed out. Callers wait in slices of at
-- most a second so that no waiter holds a snapshot open for long (it would
-- hold back VACUUM and CREATE INDEX CONCURRENTLY).
CREATE FUNCTION pgcoord.wait_lock(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_lock(key);
    RETURN nextval('pgcoord.fencing_token');
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END
$$;

-- live_members: members that are running now (not stopped, and their
-- control session still holds the member lock).
CREATE VIEW pgcoord.live_members AS
SELECT m.member_id, m.prefix, m.agent_id, m.hostname, m.pid, m.started_at,
       m.last_heartbeat, m.heartbeat_interval, m.session_tag, m.backend_pid,
       now() - m.last_heartbeat AS heartbeat_age
FROM pgcoord.members m
WHERE m.stopped_at IS NULL
  AND EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
        AND l.objid::bigint = (m.member_key & 4294967295));

-- held_locks: every pgcoord lock held or waited for, from pg_locks and
-- pg_stat_activity. since is waitstart for a waiter; for a holder it is when
-- its session last finished a statement, which is the grant time for a lock
-- taken by a wait and an upper bound on it for locks sharing a session.
CREATE VIEW pgcoord.held_locks AS
SELECT r.name,
       k.key,
       CASE WHEN l.mode = 'ExclusiveLock' THEN 'exclusive' ELSE 'shared' END AS mode,
       m.member_id,
       l.granted,
       CASE WHEN l.granted THEN a.state_change ELSE l.waitstart END AS since,
       l.pid
FROM pg_catalog.pg_locks l
CROSS JOIN LATERAL (SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS key) k
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pgcoord.members m ON m.session_tag = a.application_name AND m.stopped_at IS NULL
LEFT JOIN pgcoord.locks r ON r.key = k.key
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
  AND (m.member_id IS NOT NULL OR r.name IS NOT NULL);
