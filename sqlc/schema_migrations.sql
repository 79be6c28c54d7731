-- Not a migration: golang-migrate creates this table itself (in schema
-- pgcoord, see migrate.go). It is declared here only so that sqlc can check
-- the queries that read it.
CREATE TABLE pgcoord.schema_migrations (
    version bigint  NOT NULL PRIMARY KEY,
    dirty   boolean NOT NULL
);
