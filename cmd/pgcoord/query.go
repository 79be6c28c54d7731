package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// queries are the sqlc-generated queries shared by the read-only commands.
var queries = db.New()

// queryTimeout bounds the work of a command that only reads or prunes
// (locks, members, prune, leader, migrate --status): connecting, checking
// the schema and its queries. Each connection attempt has its own, shorter
// bound (pgcoord.DefaultConnectTimeout unless the URL sets connect_timeout);
// this one catches a server that answered the login and then went silent,
// which a connect timeout cannot see. A command cut short by it exits 69,
// like one that could not connect.
const queryTimeout = 30 * time.Second

// migrateTimeout bounds "pgcoord migrate": longer than queryTimeout, since
// it may wait its turn behind another process migrating the same database.
const migrateTimeout = 5 * time.Minute

// bounded returns a.ctx limited to d.
func (a *app) bounded(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, d)
}

// connect opens a plain connection for the read-only commands, tagged so
// that it is easy to tell apart from coordinator sessions in
// pg_stat_activity.
func connect(ctx context.Context, url, appName string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx keeps the password out of its parse errors.
		return nil, fmt.Errorf("database URL: %w", err)
	}
	cc.RuntimeParams["application_name"] = appName
	// The library's default, for the same reason: a server that accepts
	// the connection and never answers must not hang the command.
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = pgcoord.DefaultConnectTimeout
	}
	skipStandbys(cc)
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	return conn, nil
}

// skipStandbys moves a connection attempt on from a hot standby to the
// next host, as the library's sessions do (docs/ha.md: pgcoord skips a
// hot standby even without target_session_attrs), so that the commands
// read and write the primary's tables. Before, a standby listed first
// answered: members showed no live member, run's member row was left
// (found by a review helper). With one host, it fails. A hot standby says
// so in the in_hot_standby parameter as the session starts (PostgreSQL
// 14+, the oldest pgcoord supports).
func skipStandbys(cc *pgx.ConnConfig) {
	prev := cc.ValidateConnect
	cc.ValidateConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		if pc.ParameterStatus("in_hot_standby") == "on" {
			return fmt.Errorf("%s is a hot standby, not the primary", pc.Conn().RemoteAddr())
		}
		if prev != nil {
			return prev(ctx, pc)
		}
		return nil
	}
}

// closeConn closes conn even when the command's ctx was cancelled.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// requireSchema makes sure the pgcoord schema is there. The database is
// left alone, with advice, because migrating is a decision for its owner.
func requireSchema(ctx context.Context, conn *pgx.Conn) error {
	st := schemaState{Available: pgcoord.MigrationVersions()}
	if err := readVersion(ctx, conn, &st); err != nil {
		return err
	}
	if st.preRelease() {
		return fmt.Errorf("%s", st.String())
	}
	present, err := queries.SchemaPresent(ctx, conn)
	if err != nil {
		return fmt.Errorf("checking for the pgcoord schema: %w", err)
	}
	if !present && st.Dirty {
		// A first migration that failed left only golang-migrate's table,
		// marked dirty: "not found, run migrate" would send the operator
		// to a migrate that refuses, without saying why.
		return fmt.Errorf("%s", st.String())
	}
	if !present {
		return fmt.Errorf("schema pgcoord not found in this database; run 'pgcoord migrate' first")
	}
	if st.Version < st.Available[len(st.Available)-1] {
		return nil // older, but what it has is read as it is
	}
	missing, err := schemaobj.Missing(ctx, conn)
	if err != nil {
		return fmt.Errorf("checking the schema's objects: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("schema pgcoord lacks %s (changed after migrating: restore them, or drop schema pgcoord and run 'pgcoord migrate')",
			strings.Join(missing, ", "))
	}
	return nil
}

// requireCurrentSchema refuses a schema older than this pgcoord's
// migrations, for commands that write: the read commands take an older
// schema as it is, but prune's deletes are this version's statements, run
// one by one, and an older schema failed one of them part-way, after the
// others had deleted (found by a review helper).
func requireCurrentSchema(ctx context.Context, conn *pgx.Conn) error {
	st := schemaState{Available: pgcoord.MigrationVersions()}
	if err := readVersion(ctx, conn, &st); err != nil {
		return err
	}
	if newest := st.Available[len(st.Available)-1]; st.Version < newest {
		return fmt.Errorf("schema pgcoord is at version %d, older than this pgcoord's %d; run 'pgcoord migrate' first", st.Version, newest)
	}
	return nil
}

// serverNow is the database server's clock: heartbeat ages are computed
// against it, as live_members does, so a skewed client clock does not
// distort them.
func serverNow(ctx context.Context, conn *pgx.Conn) (time.Time, error) {
	now, err := queries.ServerNow(ctx, conn)
	return now.Time, err
}

// tableStyle is how the tables print: the CLI commands show full
// timestamps, the demo a compact variant that fits a terminal.
type tableStyle struct {
	// timeLayout formats timestamps (in local time).
	timeLayout string
	// showKey adds the advisory-lock key column to the held-locks table.
	showKey bool
	// indent starts every line.
	indent string
}

// cliStyle prints times with their zone offset: a table read in another
// zone (or pasted into a ticket) must not be off by hours.
var cliStyle = tableStyle{timeLayout: "2006-01-02 15:04:05.000 -07:00", showKey: true}

func fmtTime(t pgtype.Timestamptz, layout string) string {
	if !t.Valid {
		return "-"
	}
	return t.Time.Local().Format(layout)
}

// fmtAge prints an age with the precision that matters at its size:
// 0.4s, 12s, 5m3s, 2h5m, 3d4h.
func fmtAge(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d >= 48*time.Hour:
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	}
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		s := d.Round(time.Minute).String()
		return s[:len(s)-2] // "2h5m0s" -> "2h5m"
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cell is s as a table prints it: "-" when empty, and quoted with Go's
// escapes when it holds a character that is not printable (a newline or a
// tab would split or shift the row: names are the application's, and may
// hold anything but NUL), starts with a quote, or is "-" itself, so that
// every row is one line and every cell reads back as one value.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if s == "-" || s[0] == '"' || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// openSchema resolves the database, connects and checks that pgcoord's
// schema is there: the common start of the commands that read its tables.
func (a *app) openSchema(ctx context.Context, dbURL string) (*pgx.Conn, error) {
	url, err := a.database(dbURL)
	if err != nil {
		return nil, err
	}
	conn, err := connect(ctx, url, "pgcoord-cli")
	if err != nil {
		return nil, err
	}
	if err := requireSchema(ctx, conn); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}
