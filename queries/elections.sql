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

-- name: BeginTerm :one
-- Records a new term (fenced by its token) and notifies observers; null
-- since when a newer term is recorded.
SELECT pgcoord.begin_term(sqlc.arg(election)::text, sqlc.arg(key)::bigint, sqlc.arg(member_id)::text,
                          sqlc.arg(value)::text, sqlc.arg(token)::bigint)::timestamptz AS since;

-- name: Proclaim :one
SELECT pgcoord.proclaim(sqlc.arg(election)::text, sqlc.arg(token)::bigint, sqlc.arg(value)::text)::boolean AS ok;

-- name: EndTerm :one
SELECT pgcoord.end_term(sqlc.arg(election)::text, sqlc.arg(token)::bigint)::boolean AS ok;

-- name: CurrentLeader :one
SELECT member_id, value, token, since FROM pgcoord.leaders WHERE election = sqlc.arg(election);

-- name: ListLeaders :many
SELECT election, member_id, value, token, since, hostname, pid
FROM pgcoord.leaders
WHERE election LIKE sqlc.arg(pattern)::text
ORDER BY election;

-- name: ListenLeader :exec
-- Terms begun, proclaimed or ended notify this channel with the
-- election's key (see begin_term).
LISTEN pgcoord_leader;

-- name: UnlistenLeader :exec
UNLISTEN pgcoord_leader;
