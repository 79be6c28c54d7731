-- name: ProbeAdvisoryLock :one
-- Start's check that advisory locks exclude (platform.go), one round trip
-- on each of two sessions: the first takes the probe key, the second must
-- be refused it. The key is taken only on the backend the session found
-- when it connected (pid): on another one, a transaction-pooling proxy moved
-- the statement, and a lock taken there would stay behind on a backend that
-- other clients share. version() names the server in the error.
SELECT pg_backend_pid()::integer AS pid,
       version()::text AS version,
       (CASE WHEN pg_backend_pid() = sqlc.arg(pid)::integer
             THEN pg_try_advisory_lock(sqlc.arg(key1)::integer, sqlc.arg(key2)::integer)
             ELSE false END)::boolean AS locked;
