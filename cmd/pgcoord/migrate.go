package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// cmdMigrate applies the embedded migrations, or with --status reports
// where the database stands. Coordinators migrate on Start too; this is for
// deployments whose coordinators run with SkipMigrations under a role that
// may not create schemas.
func cmdMigrate(a *app, args []string) int {
	vs := pgcoord.MigrationVersions()
	first, last := vs[0], vs[len(vs)-1]
	fs := newFlagSet(a, "pgcoord migrate [--status] [--json | -o json] [--database-url URL]",
		"Applies pgcoord's schema migrations (schema pgcoord) to the database and says\n"+
			fmt.Sprintf("what it did: \"applied %s, now at version %d\" or \"already at version %d\".\n",
				versionRange([]int{first, last}), last, last)+
			"Safe to run repeatedly and from several processes at once. With --status, changes\n"+
			"nothing and prints the database's version, the embedded ones and those still\n"+
			"to apply. A schema written by a pre-release pgcoord (version below 100) is\n"+
			"refused with what to do.")
	dbURL := dbFlag(fs)
	status := fs.Bool("status", false, "report the schema version and pending migrations; apply nothing")
	out := addOutputFlags(fs)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if code, done := a.noArgs(fs); done {
		return code
	}
	asJSON, err := out.isJSON()
	if err != nil {
		return a.usageError("%v", err)
	}
	url, err := a.database(*dbURL)
	if err != nil {
		return a.fail(err)
	}
	ctx, cancel := a.bounded(queryTimeout)
	before, err := schemaStatus(ctx, url)
	cancel()
	if err != nil {
		return a.fail(err)
	}
	if *status {
		if asJSON {
			err = writeJSON(a.stdout, before)
		} else {
			_, err = fmt.Fprintln(a.stdout, before.String())
		}
		if err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	ctx, cancel = a.bounded(migrateTimeout)
	defer cancel()
	if err := pgcoord.Migrate(ctx, url); err != nil {
		return a.fail(err)
	}
	after, err := schemaStatus(ctx, url)
	if err != nil {
		return a.fail(err)
	}
	if len(after.Missing) > 0 {
		// The version says these are there, so migrating cannot bring
		// them back: changed by hand.
		return a.fail(fmt.Errorf("%s", after.String()))
	}
	res := migrateResult{From: before.Version, To: after.Version}
	if asJSON {
		err = writeJSON(a.stdout, res)
	} else {
		_, err = fmt.Fprintln(a.stdout, res.String())
	}
	if err != nil {
		return a.fail(err)
	}
	return exitOK
}

// migrateResult is what one migrate run did. From is 0 for an empty
// database. (Another process migrating at the same moment may have applied
// some of the range; the schema is at To either way.)
type migrateResult struct {
	From int `json:"from"`
	To   int `json:"to"`
}

func (r migrateResult) String() string {
	if r.From == r.To {
		return fmt.Sprintf("pgcoord schema already at version %d", r.To)
	}
	var applied []int
	for _, v := range pgcoord.MigrationVersions() {
		if v > r.From && v <= r.To {
			applied = append(applied, v)
		}
	}
	return fmt.Sprintf("pgcoord schema: applied %s, now at version %d", versionRange(applied), r.To)
}

// schemaState is where a database's pgcoord schema stands.
type schemaState struct {
	// Version is the applied version, 0 when the schema is absent.
	Version int `json:"version"`
	// Dirty is golang-migrate's flag: a migration failed part-way.
	Dirty bool `json:"dirty"`
	// Available are the embedded migrations; Pending those above Version.
	Available []int `json:"available"`
	Pending   []int `json:"pending"`
	// Missing are the objects pgcoord needs that an installed schema
	// lacks ("relation pgcoord.held_locks", "function ...", "column
	// ..."): changed by hand after migrating.
	Missing []string `json:"missing"`
}

// preRelease reports whether the schema was written by a pre-release
// pgcoord (a version below the first embedded one), which migrations
// cannot move forward.
func (s schemaState) preRelease() bool {
	return s.Version > 0 && len(s.Available) > 0 && s.Version < s.Available[0]
}

func (s schemaState) String() string {
	var b strings.Builder
	switch {
	case s.Version == 0:
		b.WriteString("pgcoord schema: not installed")
	case s.preRelease():
		fmt.Fprintf(&b, "pgcoord schema: version %d, written by a pre-release pgcoord; "+
			"drop schema pgcoord and run 'pgcoord migrate' (see CHANGELOG.md, v0.1.0)", s.Version)
		return b.String()
	default:
		fmt.Fprintf(&b, "pgcoord schema: version %d", s.Version)
	}
	fmt.Fprintf(&b, "; this pgcoord has %s", versionRange(s.Available))
	switch {
	case s.Dirty:
		// Not "up to date" nor "pending" from the version: that version's
		// migration did not finish, and migrate refuses to go on.
		fmt.Fprintf(&b, "; dirty: migration %d began and did not finish (run 'pgcoord migrate' to see what to do)", s.Version)
	case len(s.Missing) > 0:
		fmt.Fprintf(&b, "; incomplete: lacks %s (changed after migrating: restore them, or drop schema pgcoord and run 'pgcoord migrate')",
			strings.Join(s.Missing, ", "))
	case len(s.Available) > 0 && s.Version > s.Available[len(s.Available)-1]:
		// A newer pgcoord migrated it (a rolling upgrade): this one has
		// nothing to apply, and uses it if its objects are there.
		b.WriteString("; newer than this pgcoord (nothing to apply; run the newer pgcoord's 'migrate --status')")
	case len(s.Pending) == 0:
		b.WriteString("; up to date")
	default:
		fmt.Fprintf(&b, "; pending: %s (run 'pgcoord migrate')", versionRange(s.Pending))
	}
	return b.String()
}

// versionRange prints versions as "1..3", or "5" for one.
func versionRange(vs []int) string {
	switch len(vs) {
	case 0:
		return "none"
	case 1:
		return strconv.Itoa(vs[0])
	}
	return fmt.Sprintf("%d..%d", vs[0], vs[len(vs)-1])
}

// schemaStatus reads the schema version of the database at url.
func schemaStatus(ctx context.Context, url string) (schemaState, error) {
	st := schemaState{Available: pgcoord.MigrationVersions(), Pending: []int{}, Missing: []string{}}
	conn, err := connect(ctx, url, "pgcoord-cli")
	if err != nil {
		return st, err
	}
	defer closeConn(conn)
	if err := readVersion(ctx, conn, &st); err != nil {
		return st, err
	}
	if st.preRelease() {
		return st, nil // nothing applies to it: String says what to do
	}
	for _, v := range st.Available {
		if v > st.Version {
			st.Pending = append(st.Pending, v)
		}
	}
	if len(st.Pending) == 0 && st.Version > 0 {
		// Objects of later versions are not expected before those run.
		missing, err := schemaobj.Missing(ctx, conn)
		if err != nil {
			return st, fmt.Errorf("checking the schema's objects: %w", err)
		}
		st.Missing = append(st.Missing, missing...)
	}
	return st, nil
}

// readVersion reads the recorded version into st; 0 when golang-migrate's
// table is absent. Only that table counts: a first migration that failed
// leaves it, marked dirty, and no table of pgcoord's, and that is a dirty
// schema, not an absent one.
func readVersion(ctx context.Context, conn *pgx.Conn, st *schemaState) error {
	present, err := queries.MigrationsTablePresent(ctx, conn)
	if err != nil || !present {
		if err != nil {
			return fmt.Errorf("checking for the pgcoord schema: %w", err)
		}
		return nil
	}
	v, err := queries.SchemaVersion(ctx, conn)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	st.Version, st.Dirty = max(int(v.Version), 0), v.Dirty
	return nil
}
