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

-- name: MigrationsTablePresent :one
-- Whether golang-migrate's table is there: it records a version (dirty when
-- that migration failed) even when the first migration failed and left no
-- other table.
SELECT (to_regclass('pgcoord.schema_migrations') IS NOT NULL)::boolean AS present;

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

-- name: MissingSchemaObjects :many
-- What schema pgcoord lacks of the objects pgcoord needs (internal/schemaobj):
-- relations ('pgcoord.members'), functions with their argument types
-- ('pgcoord.wait_lock(bigint,integer)') and columns of relations that exist
-- ('pgcoord.held_locks.backend_pid'), each named with its kind, in the
-- order given. Empty when the schema is whole.
SELECT m.missing::text AS missing FROM (
    SELECT 'relation ' || r AS missing, 1 AS kind, i
    FROM unnest(sqlc.arg(relations)::text[]) WITH ORDINALITY AS t(r, i)
    WHERE to_regclass(r) IS NULL
    UNION ALL
    SELECT 'function ' || f, 2, i
    FROM unnest(sqlc.arg(functions)::text[]) WITH ORDINALITY AS t(f, i)
    WHERE to_regprocedure(f) IS NULL
    UNION ALL
    SELECT 'column ' || c, 3, i
    FROM unnest(sqlc.arg(columns)::text[]) WITH ORDINALITY AS t(c, i)
    WHERE to_regclass(regexp_replace(c, '\.[^.]+$', '')) IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = to_regclass(regexp_replace(c, '\.[^.]+$', ''))
            AND a.attname = regexp_replace(c, '^.*\.', '')
            AND a.attnum > 0 AND NOT a.attisdropped)
) m
ORDER BY m.kind, m.i;

-- name: CurrentDatabase :one
SELECT current_database()::text AS database;

-- name: AwaitMigrateLock :exec
-- Waits for golang-migrate's migration lock (a session advisory lock on
-- the key it derives from the database, schema and table names), under
-- the caller's ctx, which cancels the wait: golang-migrate's own wait for
-- it has no bound.
SELECT pg_advisory_lock(sqlc.arg(key)::bigint);

-- name: ReleaseMigrateLock :exec
SELECT pg_advisory_unlock(sqlc.arg(key)::bigint);
