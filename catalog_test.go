package pgcoord

import (
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// catalogQueries describe schema pgcoord as the server's catalog has it, one
// line per object or attribute: what two migration histories must agree on
// to give the same schema. Data (schema_migrations' version, sequence
// values) is left out; owners are in the ACLs, which the tests give no
// grants to compare beyond the owner's own.
var catalogQueries = []string{
	// The schema itself: its privileges and comment.
	`SELECT 'schema ' || n.nspname || ' acl=' || coalesce(n.nspacl::text, '') ||
	        ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
	 FROM pg_namespace n WHERE n.nspname = 'pgcoord'`,
	// Tables, views, sequences, indexes: kind, persistence (UNLOGGED),
	// storage options (fillfactor), grants, comments.
	`SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text ||
	        ' options=' || coalesce(array_to_string(c.reloptions, ','), '') ||
	        ' acl=' || coalesce(c.relacl::text, '') ||
	        ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
	 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'pgcoord'`,
	// Columns in their order, with types, NOT NULL, defaults, grants, comments.
	`SELECT 'column ' || c.relname || '.' || lpad(a.attnum::text, 3, '0') || ' ' || a.attname ||
	        ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull ||
	        ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') ||
	        ' acl=' || coalesce(a.attacl::text, '') ||
	        ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
	 FROM pg_attribute a
	 JOIN pg_class c ON c.oid = a.attrelid
	 JOIN pg_namespace n ON n.oid = c.relnamespace
	 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	 WHERE n.nspname = 'pgcoord' AND a.attnum > 0 AND NOT a.attisdropped`,
	// Constraints (primary keys, unique, checks, foreign keys).
	`SELECT 'constraint ' || coalesce(c.relname, '') || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
	 FROM pg_constraint k
	 JOIN pg_namespace n ON n.oid = k.connamespace
	 LEFT JOIN pg_class c ON c.oid = k.conrelid
	 WHERE n.nspname = 'pgcoord'`,
	// Indexes as CREATE INDEX statements.
	`SELECT 'index ' || pg_get_indexdef(i.indexrelid)
	 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'pgcoord'`,
	// Sequences' parameters (not their values).
	`SELECT 'sequence ' || c.relname || ' type=' || format_type(s.seqtypid, NULL) ||
	        ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' min=' || s.seqmin ||
	        ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
	 FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'pgcoord'`,
	// Functions: signature, grants, comment and the whole CREATE FUNCTION
	// (attributes such as SECURITY DEFINER and SET, and the body).
	`SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' ||
	        ' acl=' || coalesce(p.proacl::text, '') ||
	        ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') || E'\n' ||
	        pg_get_functiondef(p.oid)
	 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	 WHERE n.nspname = 'pgcoord'`,
	// Views' definitions as the server keeps them.
	`SELECT 'view ' || c.relname || E'\n' || pg_get_viewdef(c.oid, true)
	 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'pgcoord' AND c.relkind IN ('v', 'm')`,
	// Triggers, should there ever be any.
	`SELECT 'trigger ' || pg_get_triggerdef(t.oid)
	 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'pgcoord' AND NOT t.tgisinternal`,
	// Types of their own (enums, composites not backing a table), likewise.
	`SELECT 'type ' || t.typname || ' ' || t.typtype::text
	 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	 LEFT JOIN pg_class c ON c.oid = t.typrelid
	 WHERE n.nspname = 'pgcoord' AND t.typelem = 0 AND (c.oid IS NULL OR c.relkind = 'c')`,
}

// catalogDump returns schema pgcoord's catalog as sorted lines (see
// catalogQueries): two databases whose dumps are equal have the same
// tables, columns, defaults, constraints, indexes, sequences, functions,
// views, grants and comments.
func catalogDump(t testing.TB, conn *pgx.Conn) string {
	t.Helper()
	var lines []string
	for _, q := range catalogQueries {
		rows, err := conn.Query(ctx(t), q)
		require.NoError(t, err, q)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err, q)
		lines = append(lines, got...)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
