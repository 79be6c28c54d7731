package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

// rfc3339UTC is how every time prints in JSON.
var rfc3339UTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)

func TestMembersJSON(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "json-member")
	for _, flags := range [][]string{{"--json"}, {"-o", "json"}, {"--output=json"}} {
		r := startCLIEnv(t, false, []string{"TZ=Asia/Tokyo"}, append([]string{"members"}, flags...)...).wait(t, 30*time.Second)
		require.Equal(t, exitOK, r.code, "%v", flags)
		var ms []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &ms), r.stdout)
		var mine map[string]any
		for _, m := range ms {
			if m["member_id"] == c.MemberID() {
				mine = m
			}
		}
		require.NotNil(t, mine, "member %s in %s", c.MemberID(), r.stdout)
		require.Equal(t, "live", mine["state"])
		require.Equal(t, true, mine["live"])
		require.Equal(t, prefix, mine["prefix"])
		require.Equal(t, "json-member", mine["agent_id"])
		require.Regexp(t, rfc3339UTC, mine["started_at"], "RFC 3339 in UTC whatever TZ says")
		require.Regexp(t, rfc3339UTC, mine["last_heartbeat"])
		require.Nil(t, mine["stopped_at"])
		require.Less(t, mine["heartbeat_age_seconds"], 30.0)
	}

	require.NoError(t, c.Stop(context.Background()))
	r := runCLI(t, "members", "--all", "--json")
	require.Equal(t, exitOK, r.code)
	var ms []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ms))
	found := false
	for _, m := range ms {
		if m["member_id"] == c.MemberID() {
			found = true
			require.Equal(t, "stopped", m["state"])
			require.Regexp(t, rfc3339UTC, m["stopped_at"])
		}
	}
	require.True(t, found)

	r = runCLI(t, "members", "-o", "yaml")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, `unknown output format "yaml"`)
}

func TestLocksJSON(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "json-locks")
	l := holdLock(t, c, "report")
	r := runCLI(t, "locks", "--json")
	require.Equal(t, exitOK, r.code)
	var ls []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ls), r.stdout)
	var mine map[string]any
	for _, x := range ls {
		if x["name"] == prefix+"report" {
			mine = x
		}
	}
	require.NotNil(t, mine, r.stdout)
	require.Equal(t, c.MemberID(), mine["member_id"])
	require.Equal(t, "exclusive", mine["mode"])
	require.Equal(t, true, mine["granted"])
	require.Regexp(t, rfc3339UTC, mine["since"])
	// Keys are int64: JSON numbers lose nothing only when decoded as such.
	var exact []struct{ Key int64 }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &exact))
	keys := []int64{}
	for _, x := range exact {
		keys = append(keys, x.Key)
	}
	require.Contains(t, keys, l.Key())
}

// Tables print times in the local zone with the zone, so a table read in
// Tokyo is not nine hours off.
func TestTablesPrintZone(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "zone")
	holdLock(t, c, "zoned")
	r := startCLIEnv(t, false, []string{"TZ=Asia/Tokyo"}, "members").wait(t, 30*time.Second)
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, regexp.QuoteMeta(c.MemberID())+` .*\d\d:\d\d:\d\d\.\d{3} \+09:00 .*\d\d:\d\d:\d\d\.\d{3} \+09:00 `, r.stdout)
	r = startCLIEnv(t, false, []string{"TZ=UTC"}, "locks").wait(t, 30*time.Second)
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, regexp.QuoteMeta(prefix+"zoned")+` .*\d\d:\d\d:\d\d\.\d{3} \+00:00 `, r.stdout)
}

func TestMigrateSaysWhatItDid(t *testing.T) {
	t.Parallel()
	url := freshDatabase(t)
	latest := pgcoord.MigrationVersions()[len(pgcoord.MigrationVersions())-1]
	all := versionRange(pgcoord.MigrationVersions())

	r := runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, fmt.Sprintf("pgcoord schema: not installed; this pgcoord has %s; pending: %s (run 'pgcoord migrate')\n", all, all), r.stdout)

	r = runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, fmt.Sprintf("pgcoord schema: applied %s, now at version %d\n", all, latest), r.stdout)
	// The docs quote these lines: with this release's versions.
	doc, err := os.ReadFile("../../docs/cli.md")
	require.NoError(t, err)
	require.Contains(t, strings.Join(strings.Fields(string(doc)), " "),
		fmt.Sprintf("pgcoord schema: applied %s, now at version %d` on an empty database, or `pgcoord schema already at version %d`", all, latest, latest),
		"docs/cli.md quotes migrate's output with another schema version")

	r = runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, fmt.Sprintf("pgcoord schema already at version %d\n", latest), r.stdout)

	r = runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, fmt.Sprintf("pgcoord schema: version %d; this pgcoord has %s; up to date\n", latest, all), r.stdout)

	r = runCLI(t, "migrate", "--status", "--json", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	var st struct {
		Version   int
		Dirty     bool
		Available []int
		Pending   []int
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.Equal(t, latest, st.Version)
	require.Equal(t, pgcoord.MigrationVersions(), st.Available)
	require.Empty(t, st.Pending)
	require.True(t, strings.HasPrefix(r.stdout, "{\n"), "indented JSON")
}

// A schema migrated by a pre-release pgcoord (versions 1..13 of the history
// v0.1.0 squashed): --status and migrate say what to do, instead of
// golang-migrate's "no migration found for version 13".
func TestMigratePreReleaseSchema(t *testing.T) {
	t.Parallel()
	url := freshDatabase(t)
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `CREATE SCHEMA pgcoord;
		CREATE TABLE pgcoord.schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
		INSERT INTO pgcoord.schema_migrations VALUES (13, false);
		CREATE TABLE pgcoord.members (member_id text PRIMARY KEY)`)
	require.NoError(t, err)

	r := runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, "pgcoord schema: version 13, written by a pre-release pgcoord; drop schema pgcoord and run 'pgcoord migrate' (see CHANGELOG.md, v0.1.0)\n", r.stdout)

	r = runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitError, r.code)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, "pgcoord migrate: schema written by a pre-release pgcoord: schema pgcoord is at version 13")
	require.Contains(t, r.stderr, "DROP SCHEMA pgcoord CASCADE and run `pgcoord migrate`")
	require.NotContains(t, r.stderr, "no migration found")
}

// A schema a newer pgcoord migrated (a rolling upgrade, this binary the
// older release): --status says so instead of "up to date", and migrate,
// with nothing to apply, succeeds instead of failing with golang-migrate's
// "no migration found for version N" (found by a review helper); the
// commands use the schema.
func TestMigrateNewerSchema(t *testing.T) {
	t.Parallel()
	newer := newestMigration() + 1
	url := migratedAt(t, newer)

	r := runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, fmt.Sprintf("pgcoord schema: version %d;", newer))
	require.Contains(t, r.stdout, "; newer than this pgcoord (nothing to apply")
	require.NotContains(t, r.stdout, "up to date")

	r = runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NotContains(t, r.stderr, "no migration found")

	r = runCLI(t, "members", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
}

// newestMigration is this pgcoord's newest migration.
func newestMigration() int {
	vs := pgcoord.MigrationVersions()
	return vs[len(vs)-1]
}

// migratedAt returns a fresh database migrated by this pgcoord, its
// recorded version then set to version: as an older or newer pgcoord
// would have left it (its objects are this release's).
func migratedAt(t *testing.T, version int) string {
	t.Helper()
	return migratedThen(t, `UPDATE pgcoord.schema_migrations SET version = $1`, version)
}

// migratedThen returns a fresh database migrated by this pgcoord, then
// changed by sql.
func migratedThen(t *testing.T, sql string, args ...any) string {
	t.Helper()
	url := freshDatabase(t)
	r := runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
	return url
}

// prune against a schema older than this pgcoord's migrations deletes
// nothing and says to migrate: its deletes are this version's, run one by
// one, and one of them failing on the older schema came after the others
// had deleted (found by a review helper).
func TestPruneRefusesOlderSchema(t *testing.T) {
	t.Parallel()
	older := newestMigration() - 1
	url := migratedAt(t, older)

	r := runCLI(t, "prune", "--database-url", url)
	require.Equal(t, exitError, r.code)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, fmt.Sprintf("schema pgcoord is at version %d, older than this pgcoord's %d; run 'pgcoord migrate' first", older, older+1))

	r = runCLI(t, "members", "--database-url", url)
	require.Equal(t, exitOK, r.code, "the read commands take it as it is: %s", r.stderr)
}

// A schema changed by hand after migrating (a view dropped): the commands
// name what is missing instead of failing on it later, and migrate says
// that migrating cannot bring it back.
func TestCommandsNameMissingObjects(t *testing.T) {
	t.Parallel()
	url := migratedThen(t, `DROP VIEW pgcoord.leaders`)

	var r cliResult
	for _, args := range [][]string{{"locks"}, {"members"}, {"leader", "x"}, {"migrate"}} {
		r = runCLI(t, append(args, "--database-url", url)...)
		require.Equal(t, exitError, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, r.stderr, "lacks relation pgcoord.leaders", "%v", args)
	}
	r = runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, "; incomplete: lacks relation pgcoord.leaders (changed after migrating")
}

// A migration that failed leaves the schema marked dirty at its version,
// with nothing of it applied (one transaction). --status says so (not "up
// to date"), migrate says what to do (golang-migrate's "Fix and force
// version" names a command pgcoord has not), and doing it works.
func TestMigrateDirtySchema(t *testing.T) {
	t.Parallel()
	newest := newestMigration()
	downs, err := filepath.Glob(fmt.Sprintf("../../migrations/%04d_*.down.sql", newest))
	require.NoError(t, err)
	require.Len(t, downs, 1)
	down, err := os.ReadFile(downs[0])
	require.NoError(t, err)
	// The state the newest migration leaves when it fails: undone, and
	// its version marked dirty.
	url := migratedThen(t, string(down)+`; UPDATE pgcoord.schema_migrations SET version = `+strconv.Itoa(newest)+`, dirty = true`)

	r := runCLI(t, "migrate", "--status", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, fmt.Sprintf("dirty: migration %d began and did not finish", newest))
	require.NotContains(t, r.stdout, "up to date")

	r = runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitError, r.code, r.stderr)
	require.NotContains(t, r.stderr, "force version")
	vs := pgcoord.MigrationVersions()
	fix := fmt.Sprintf("UPDATE pgcoord.schema_migrations SET version = %d, dirty = false;", vs[len(vs)-2])
	require.Contains(t, r.stderr, "`"+fix+"`")

	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), fix)
	require.NoError(t, err)
	r = runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, fmt.Sprintf("applied %d, now at version %d", newest, newest))
	r = runCLI(t, "migrate", "--status", "--database-url", url)
	require.Contains(t, r.stdout, "up to date")
}
