-- name: JoinGroup :exec
-- Joins (or joins again, replacing the capabilities) and notifies watchers.
WITH up AS (
    INSERT INTO pgcoord.group_members AS g (group_name, member_id, capabilities)
    VALUES (sqlc.arg(group_name), sqlc.arg(member_id), sqlc.arg(capabilities)::jsonb)
    ON CONFLICT (group_name, member_id) DO UPDATE
        SET capabilities = excluded.capabilities, updated_at = now()
    RETURNING g.group_name
)
SELECT pg_notify('pgcoord_group', sqlc.arg(key)::bigint::text) FROM up;

-- name: LeaveGroup :one
-- Leaves and notifies watchers; 0 when the member was not in the group.
WITH del AS (
    DELETE FROM pgcoord.group_members
    WHERE group_name = sqlc.arg(group_name) AND member_id = sqlc.arg(member_id)
    RETURNING group_name
), n AS (
    SELECT pg_notify('pgcoord_group', sqlc.arg(key)::bigint::text) FROM del
)
SELECT ((SELECT count(*) FROM del) + 0 * (SELECT count(*) FROM n))::integer AS left_count;

-- name: UpdateCapabilities :one
-- 0 when the member is not in the group.
WITH up AS (
    UPDATE pgcoord.group_members SET capabilities = sqlc.arg(capabilities)::jsonb, updated_at = now()
    WHERE group_name = sqlc.arg(group_name) AND member_id = sqlc.arg(member_id)
    RETURNING group_name
), n AS (
    SELECT pg_notify('pgcoord_group', sqlc.arg(key)::bigint::text) FROM up
)
SELECT ((SELECT count(*) FROM up) + 0 * (SELECT count(*) FROM n))::integer AS updated_count;

-- name: GroupMembers :many
SELECT member_id, agent_id, hostname, pid, started_at, last_heartbeat, capabilities::text AS capabilities
FROM pgcoord.live_group_members
WHERE group_name = sqlc.arg(group_name)
ORDER BY member_id;

-- name: ListGroups :many
-- Groups of a prefix with a running member.
SELECT DISTINCT group_name FROM pgcoord.live_group_members
WHERE prefix = sqlc.arg(prefix) AND starts_with(group_name, sqlc.arg(prefix)::text)
ORDER BY group_name;

-- name: PrefixMembers :many
SELECT member_id, agent_id, hostname, pid, started_at, last_heartbeat
FROM pgcoord.live_members
WHERE prefix = sqlc.arg(prefix)
ORDER BY member_id;

-- name: ListenGroup :exec
-- Joins, leaves and capability updates notify this channel with the
-- group's key.
LISTEN pgcoord_group;

-- name: UnlistenGroup :exec
UNLISTEN pgcoord_group;

-- name: MayForgetGroups :one
-- Whether the role may delete memberships: one granted only a coordinator's
-- grants (no groups) is not asked to, so that its Start leaves no
-- "permission denied" in the server's log.
SELECT has_table_privilege('pgcoord.group_members', 'DELETE')::boolean AS may;

-- name: ForgetGroups :exec
-- Start, under the member lock and before the member row is live again:
-- the memberships a previous life of the member (same member id, a fixed
-- AgentID) left are not this life's (tooz's memberships do not outlive
-- their member either).
DELETE FROM pgcoord.group_members WHERE member_id = sqlc.arg(member_id);

-- name: RejoinGroups :exec
-- After a reconnect: puts back, with the capabilities they had, the
-- memberships this life of the member holds that are gone (a prune deleted
-- them while the member was cut off longer than the retention, its row
-- silent), and notifies watchers of those groups only. Memberships still
-- there are left as they are: no write, no notification. The three arrays
-- go together, element by element.
WITH want AS (
    SELECT (sqlc.arg(group_names)::text[])[i] AS group_name,
           (sqlc.arg(capabilities)::text[])[i] AS capabilities,
           (sqlc.arg(keys)::bigint[])[i] AS key
    FROM generate_subscripts(sqlc.arg(group_names)::text[], 1) AS i
), back AS (
    INSERT INTO pgcoord.group_members (group_name, member_id, capabilities)
    SELECT want.group_name, sqlc.arg(member_id), want.capabilities::jsonb FROM want
    ON CONFLICT (group_name, member_id) DO NOTHING
    RETURNING group_name
)
SELECT pg_notify('pgcoord_group', want.key::text)
FROM back JOIN want ON want.group_name = back.group_name;
