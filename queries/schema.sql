-- name: MigrationLock :exec
-- Serialises the CREATE SCHEMA that must precede golang-migrate (whose table
-- lives in the schema) among processes starting at once.
SELECT pg_advisory_xact_lock(sqlc.arg(key)::bigint);

-- name: SchemaVersion :one
-- Version and dirty flag of the pgcoord schema; version -1 when it is absent.
SELECT coalesce((SELECT version FROM pgcoord.schema_migrations LIMIT 1), -1)::bigint AS version,
       coalesce((SELECT dirty FROM pgcoord.schema_migrations LIMIT 1), false)::boolean AS dirty;

-- name: SchemaPresent :one
SELECT (to_regclass('pgcoord.schema_migrations') IS NOT NULL
        AND to_regclass('pgcoord.members') IS NOT NULL)::boolean AS present;

-- name: SchemaExists :one
SELECT (to_regnamespace('pgcoord') IS NOT NULL)::boolean AS exists;

-- name: CreateSchema :exec
-- Only run when SchemaExists is false: CREATE SCHEMA checks the CREATE
-- privilege even with IF NOT EXISTS, and the coordinator's role may lack it.
CREATE SCHEMA IF NOT EXISTS pgcoord;

-- name: ServerNow :one
-- The server's clock, which heartbeat ages are measured against (as
-- live_members does), so a skewed client clock does not distort them.
SELECT clock_timestamp()::timestamptz AS now;
