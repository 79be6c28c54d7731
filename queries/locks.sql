-- name: TryLock :one
-- One round trip: the try and, when it succeeds, a fencing token candidate.
-- 0 means busy. The candidate is a plain nextval: the client takes it as
-- the token when it is above its session's timeline floor (timeline << 48,
-- learnt as the session connected: a server writes on one timeline for as
-- long as it runs), and otherwise, on the first try of a new timeline only,
-- asks RaiseTokenFloor for the token, still holding the lock. That is
-- pgcoord.next_token() split in two, so that a try costs the
-- server a nextval instead of next_token's PL/pgSQL calls and WAL position
-- lookup (about 5 us of server time per acquire, measured on the loaded
-- 2-core machine of the hot-path issue).
SELECT (CASE WHEN pg_try_advisory_lock(sqlc.arg(key)::bigint)
             THEN nextval('pgcoord.fencing_token')
             ELSE 0 END)::bigint AS token;

-- name: RaiseTokenFloor :one
-- The fencing token of a hold whose TryLock candidate was at or below its
-- session's timeline floor: the first token on a new timeline moves the
-- sequence up to the floor (see pgcoord.timeline_floor).
SELECT pgcoord.raise_token_floor()::bigint AS token;

-- name: WaitLock :one
-- Waits on the server for at most timeout_ms, then returns a fencing token
-- candidate (see TryLock). A wait that times out fails with SQLSTATE 55P03
-- (lock_not_available), which the client reads as "not yet": the statement
-- is its own transaction, so the error leaves the session as it was, and
-- lock_timeout, set for this transaction only, is gone with it; all but a
-- grant that raced the timeout, which the server keeps and the client
-- releases (UnlockAll: a wait session holds nothing else). Each WHEN
-- runs in order and is false (a void result is not null), so the ELSE's
-- nextval runs once the lock is held. This is pgcoord.wait_lock (migration
-- 1) without its PL/pgSQL exception block (a subtransaction per wait) and
-- next_token: about 5 us of server time instead of 39 us (pg_stat_statements
-- mean_exec_time, 10,000 uncontended calls each, load 45).
SELECT (CASE WHEN set_config('lock_timeout', sqlc.arg(timeout_ms)::integer || 'ms', true) IS NULL THEN 0
             WHEN pg_advisory_lock(sqlc.arg(key)::bigint) IS NULL THEN 0
             ELSE nextval('pgcoord.fencing_token') END)::bigint AS token;

-- name: Unlock :one
-- Releases key and, only when someone waits for it beyond their session
-- budget (a shared lock on its wait marker, the two-int key (key >> 32,
-- low 32 bits of key), is held), sends NOTIFY pgcoord_free with the key.
-- The marker try is an exclusive transaction-level lock, so it fails while
-- any waiter holds the marker and is gone when the statement ends. CASE
-- fixes the order: unlock, then the marker, then the notify (a scalar
-- subquery is evaluated only when its branch is reached).
SELECT (CASE
    WHEN NOT pg_advisory_unlock(sqlc.arg(key)::bigint) THEN false
    WHEN pg_try_advisory_xact_lock((sqlc.arg(key)::bigint >> 32)::integer, sqlc.arg(key)::bigint::bit(32)::integer) THEN true
    ELSE (SELECT true FROM pg_notify('pgcoord_free', sqlc.arg(key)::bigint::text))
END)::boolean AS released;

-- name: UnlockTry :one
-- Unlock of unlock_key, then TryLock of try_key, in one statement: a
-- lock session's batch of exactly one unlock and then one exclusive try
-- (the shape of every cycle under Config.AsyncRelease, whose unlock rides
-- with the next try) sent as one Bind and Execute instead of two. Both
-- parts are the statements above, unchanged; the derived table with
-- OFFSET 0 is evaluated first, so the unlock (and its wait marker's
-- NOTIFY) comes before the try, as in the batch. One statement is one
-- implicit transaction, as the batch's two before one Sync are: a failure
-- of either part rolls back the NOTIFY in both. pgbench, one client:
-- 1.84 of raw's two round trips against 1.77 for the pair piped
-- (docs/performance.md, 6 December).
SELECT u.released, (CASE WHEN pg_try_advisory_lock(sqlc.arg(try_key)::bigint)
             THEN nextval('pgcoord.fencing_token')
             ELSE 0 END)::bigint AS token
FROM (SELECT (CASE
    WHEN NOT pg_advisory_unlock(sqlc.arg(unlock_key)::bigint) THEN false
    WHEN pg_try_advisory_xact_lock((sqlc.arg(unlock_key)::bigint >> 32)::integer, sqlc.arg(unlock_key)::bigint::bit(32)::integer) THEN true
    ELSE (SELECT true FROM pg_notify('pgcoord_free', sqlc.arg(unlock_key)::bigint::text))
END)::boolean AS released OFFSET 0) AS u;

-- name: Listen :exec
-- Releases of keys with a wait marker notify this channel (see Unlock).
LISTEN pgcoord_free;

-- name: Unlisten :exec
UNLISTEN pgcoord_free;

-- name: LockWaitMarkers :exec
-- Takes a shared lock on the wait marker of each key: a release of the key
-- then notifies (see Unlock). Many waiters may hold one marker.
SELECT pg_advisory_lock_shared((k >> 32)::integer, k::bit(32)::integer)
FROM unnest(sqlc.arg(keys)::bigint[]) AS k;

-- name: UnlockWaitMarkers :exec
SELECT pg_advisory_unlock_shared((k >> 32)::integer, k::bit(32)::integer)
FROM unnest(sqlc.arg(keys)::bigint[]) AS k;

-- name: FreeConnections :one
-- Connection slots a new ordinary session may still take: max_connections
-- less the reserved slots and the client backends connected now.
SELECT (current_setting('max_connections')::integer
        - current_setting('superuser_reserved_connections')::integer
        - coalesce(current_setting('reserved_connections', true)::integer, 0))::integer AS usable,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity
        WHERE backend_type = 'client backend')::integer AS used;

-- name: BackendHoldsLocks :one
-- Whether a backend still holds advisory locks: a session's old backend
-- keeps its locks until it has finished exiting, after the client already
-- saw the connection end.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks
    WHERE pid = sqlc.arg(pid)::integer AND locktype = 'advisory' AND granted
) AS holds;

-- name: UnlockAll :exec
SELECT pg_advisory_unlock_all();

-- name: RegisterLockName :one
-- Registers key -> name, returning the name registered under key: a different
-- name means a key collision. No row comes back only when a concurrent insert
-- of the same key committed after this statement's snapshot; callers retry.
-- A name registered again refreshes last_used (at most once a minute, to
-- spare the row a write per registration), which keeps PruneLockNames off it.
-- A name registered within the minute is only read: the insert is not even
-- tried, since ON CONFLICT locks the conflicting row whether or not it then
-- updates it, and at a fleet's start every coordinator registers the same
-- names at once (make fleet: 44 coordinators, 100 names, 4.8 ms a
-- registration, waiting for each other's row locks).
WITH cur AS (
    SELECT l.name, l.last_used FROM pgcoord.locks l WHERE l.key = sqlc.arg(key)
), ins AS (
    INSERT INTO pgcoord.locks AS r (key, name)
    SELECT sqlc.arg(key), sqlc.arg(name)
    WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.last_used >= now() - interval '1 minute')
    ON CONFLICT (key) DO UPDATE SET last_used = now()
        WHERE r.name = excluded.name AND r.last_used < now() - interval '1 minute'
    RETURNING r.name
)
SELECT ins.name FROM ins
UNION ALL
SELECT cur.name FROM cur
LIMIT 1;

-- name: LockKey :one
SELECT pgcoord.lock_key(sqlc.arg(name)::text)::bigint AS key;

-- name: ListHeldLocks :many
SELECT coalesce(h.name, '')::text AS name, h.key::bigint AS key, h.mode::text AS mode,
       coalesce(h.member_id, '')::text AS member_id, h.granted::boolean AS granted,
       h.since::timestamptz AS since, h.backend_pid::integer AS backend_pid
FROM pgcoord.held_locks h
ORDER BY h.name, h.granted DESC, h.since;

-- name: AdvanceFence :exec
-- Records a new hold's token (Config.Fencing). It waits for transactions
-- that guarded a write with pgcoord.fence_ok on the previous token.
INSERT INTO pgcoord.fences AS f (key, token) VALUES (sqlc.arg(key), sqlc.arg(token))
ON CONFLICT (key) DO UPDATE SET token = excluded.token, updated_at = now()
WHERE f.token < excluded.token;

-- name: UnlockPlain :one
-- Releases key, nothing else: the retry of an Unlock that failed on a
-- connection that stayed open (a full lock table can fail Unlock's marker
-- try after its unlock ran; a cancel request can hit either).
SELECT pg_advisory_unlock(sqlc.arg(key)::bigint) AS released;
