package pgcoord

// What a role that lacks a grant is told: the statement refused (SQLSTATE
// 42501) named with the grant of docs/grants.sql that it needs, or, for a
// migration, that migrations need the schema's owner; not golang-migrate's
// "permission denied ... in line 0: CREATE TABLE IF NOT EXISTS ...".

import (
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5/pgconn"
)

// grantsScript is docs/grants.sql, the grants a coordinator's role needs:
// a refused statement is answered with the line of it that is missing.
//
//go:embed docs/grants.sql
var grantsScript string

// grantsAdvice is where a role's grants come from, said in every privilege
// error.
const grantsAdvice = "run docs/grants.sql as the schema's owner (psql -v ON_ERROR_STOP=1 -f docs/grants.sql), " +
	"then GRANT pgcoord_app TO %s (docs/operations.md, \"Grants for a least-privilege role\")"

// privilegeError is a statement the server refused for want of a grant.
// It unwraps to the server's *pgconn.PgError.
type privilegeError struct {
	err  error // as returned, for errors.Is and As
	pg   *pgconn.PgError
	role string
	// migrating: the statement was a migration's, which needs the
	// schema's owner (no grant of the script is enough).
	migrating bool
}

func (e *privilegeError) Unwrap() []error { return []error{e.err, e.pg} }

func (e *privilegeError) Error() string {
	role := "this role"
	if e.role != "" {
		role = fmt.Sprintf("role %q", e.role)
	}
	grantee := e.role
	if grantee == "" {
		grantee = "<the role>"
	}
	advice := fmt.Sprintf(grantsAdvice, quoteRole(grantee))
	if e.migrating {
		return fmt.Sprintf("pgcoord: migrate: %s may not change schema pgcoord (server: %s, SQLSTATE %s): "+
			"migrations must run as the schema's owner (or, the first time, a role with CREATE on the database); "+
			"migrate as that role (`pgcoord migrate`, or pgcoord.Migrate), then run this role's coordinators with "+
			"Config.SkipMigrations (`pgcoord run` and `pgcoord elect`: --skip-migrations), and for their grants %s",
			role, e.pg.Message, e.pg.Code, advice)
	}
	which := "docs/grants.sql grants what a coordinator needs"
	if g := missingGrant(e.pg.Message); g != "" {
		which = "docs/grants.sql has it: " + g
	}
	return fmt.Sprintf("pgcoord: %s lacks a grant (server: %s, SQLSTATE %s); %s; %s", role, e.pg.Message, e.pg.Code, which, advice)
}

var plainRole = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// quoteRole quotes a role name for the advice's GRANT when SQL needs it.
func quoteRole(r string) string {
	if plainRole.MatchString(r) || strings.HasPrefix(r, "<") {
		return r
	}
	return `"` + strings.ReplaceAll(r, `"`, `""`) + `"`
}

// deniedObject parses the server's message (in English: lc_messages
// elsewhere gives no object, and the advice stays general).
var deniedObject = regexp.MustCompile(`^permission denied for (schema|table|view|sequence|function|relation) ([A-Za-z0-9_."]+)$`)

// missingGrant returns the statement of docs/grants.sql that grants what
// msg says was denied ("GRANT USAGE ON SCHEMA pgcoord TO pgcoord_app"), or
// "" when the message names no object the script grants.
func missingGrant(msg string) string {
	m := deniedObject.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	kind, name := m[1], strings.Trim(m[2], `"`)
	if kind == "schema" {
		if name != "pgcoord" {
			return ""
		}
		return "GRANT USAGE ON SCHEMA pgcoord TO pgcoord_app"
	}
	name = strings.TrimPrefix(name, "pgcoord.")
	word := regexp.MustCompile(`pgcoord\.` + regexp.QuoteMeta(name) + `\b`)
	for _, stmt := range strings.Split(grantsScript, ";") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--") {
				lines = append(lines, l)
			}
		}
		s := strings.Join(lines, " ")
		if strings.HasPrefix(s, "GRANT ") && word.MatchString(s) {
			return s
		}
	}
	return ""
}

// pgErrorOf finds the server's error in err, also inside golang-migrate's
// database.Error, which does not unwrap.
func pgErrorOf(err error) *pgconn.PgError {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg
	}
	var dp *database.Error
	if errors.As(err, &dp) && dp != nil {
		return pgErrorOf(dp.OrigErr)
	}
	var dv database.Error
	if errors.As(err, &dv) {
		return pgErrorOf(dv.OrigErr)
	}
	return nil
}

// withGrantAdvice returns err as a privilegeError when the server refused
// a statement for want of a grant (SQLSTATE 42501), else err unchanged.
// role is the configured user, for the advice ("" when unknown).
func withGrantAdvice(err error, role string, migrating bool) error {
	if err == nil {
		return nil
	}
	var already *privilegeError
	if errors.As(err, &already) {
		return err
	}
	pg := pgErrorOf(err)
	if pg == nil || pg.Code != "42501" {
		return err
	}
	return &privilegeError{err: err, pg: pg, role: role, migrating: migrating}
}
