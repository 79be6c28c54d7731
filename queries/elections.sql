-- name: PreviousTerm :one
-- The election's latest recorded term, for a new leader deciding whether
-- its predecessor may still act unaware (see Election.Campaign): not when
-- it resigned or its member stopped. heartbeat_seconds is the
-- predecessor's HeartbeatInterval (0 when its member row is gone).
SELECT e.member_id, e.token, (e.resigned_at IS NOT NULL)::boolean AS resigned,
       coalesce(extract(epoch FROM m.heartbeat_interval), 0)::float8 AS heartbeat_seconds,
       coalesce(m.stopped_at IS NOT NULL, true)::boolean AS stopped
FROM pgcoord.elections e
LEFT JOIN pgcoord.members m ON m.member_id = e.member_id
WHERE e.election = sqlc.arg(election);

-- name: PredecessorSilence :one
-- Whether a predecessor that did not resign can be known to hold nothing
-- any more: its member lock is free (its control session is gone) and its
-- heartbeat is older than its lease (see beatlease.go). silent_seconds and
-- lease_seconds are on the database clock; lease_seconds is 0 when the
-- member never recorded its lease (or its row is gone).
SELECT coalesce(extract(epoch FROM m.lease), 0)::float8 AS lease_seconds,
       extract(epoch FROM now() - m.last_heartbeat)::float8 AS silent_seconds,
       EXISTS (
           SELECT 1 FROM pg_catalog.pg_locks l
           WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
             AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
             AND l.objid::bigint = (m.member_key & 4294967295))::boolean AS member_live
FROM pgcoord.members m
WHERE m.member_id = sqlc.arg(member_id);

-- name: BeginTerm :one
-- Records a new term (fenced by its token) and notifies observers; null
-- since when a newer term is recorded. The leader's lease is recorded in
-- its member row with it, for its successor (see PredecessorSilence). The
-- term it replaced comes back as PreviousTerm reads one (replaced_token 0
-- when there was none), for a successor that must check it was the term it
-- read (see pgcoord.take_term).
WITH lease AS (
    UPDATE pgcoord.members SET lease = make_interval(secs => sqlc.arg(lease_seconds)::float8)
    WHERE member_id = sqlc.arg(member_id)
      AND lease IS DISTINCT FROM make_interval(secs => sqlc.arg(lease_seconds)::float8)
)
SELECT t.since::timestamptz AS since,
       coalesce(t.replaced_member, '')::text AS replaced_member,
       coalesce(t.replaced_token, 0)::bigint AS replaced_token,
       coalesce(t.replaced_resigned, false)::boolean AS replaced_resigned,
       coalesce(extract(epoch FROM m.heartbeat_interval), 0)::float8 AS replaced_heartbeat_seconds,
       coalesce(m.stopped_at IS NOT NULL, true)::boolean AS replaced_stopped
FROM pgcoord.take_term(sqlc.arg(election)::text, sqlc.arg(key)::bigint, sqlc.arg(member_id)::text,
                       sqlc.arg(value)::text, sqlc.arg(token)::bigint) t
LEFT JOIN pgcoord.members m ON m.member_id = t.replaced_member;

-- name: Proclaim :one
SELECT pgcoord.proclaim(sqlc.arg(election)::text, sqlc.arg(token)::bigint, sqlc.arg(value)::text)::boolean AS ok;

-- name: EndTerm :one
SELECT pgcoord.end_term(sqlc.arg(election)::text, sqlc.arg(token)::bigint)::boolean AS ok;

-- name: CurrentLeader :one
SELECT member_id, value, token, since FROM pgcoord.leaders WHERE election = sqlc.arg(election);


-- name: ListenLeader :exec
-- Terms begun, proclaimed or ended notify this channel with the
-- election's key (see begin_term).
LISTEN pgcoord_leader;

-- name: UnlistenLeader :exec
UNLISTEN pgcoord_leader;
