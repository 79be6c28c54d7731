-- name: RecordSince :exec
-- Records when holds and server-side waits began (see pgcoord.lock_since
-- in the migration), in the server's clock (the client maps its monotonic clock
-- to it, see sinceClock). Rows of holds and waits that ended go in the same
-- statement.
WITH gone AS (
    DELETE FROM pgcoord.lock_since s
    USING unnest(sqlc.arg(gone_keys)::bigint[]) WITH ORDINALITY AS g(key, i)
    WHERE s.key = g.key AND s.pid = (sqlc.arg(gone_pids)::integer[])[g.i]
)
INSERT INTO pgcoord.lock_since AS s (key, pid, since)
SELECT n.key, (sqlc.arg(pids)::integer[])[n.i], (sqlc.arg(sinces)::timestamptz[])[n.i]
FROM unnest(sqlc.arg(keys)::bigint[]) WITH ORDINALITY AS n(key, i)
ON CONFLICT (key, pid) DO UPDATE SET since = excluded.since;

-- name: PruneLockSince :execrows
-- Rows of backends that are gone (a process that died before it could
-- delete them).
DELETE FROM pgcoord.lock_since s
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = s.pid);
