package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

const leaderDescription = `Prints the current leader of the election NAME (prefix included, as
"pgcoord elect --prefix P NAME" names it P+NAME), from the view pgcoord.leaders:
its member, value, term token and since when, or "no leader". With --watch it
prints the leader, then a line at every change (a new term, a new value, a
resignation, a death) until interrupted: changes are notified (LISTEN
pgcoord_leader) and the leader is read again every --interval, which finds a
leader that died without a word. JSON prints one object per line with --watch.`

// cmdLeader implements "pgcoord leader NAME [--watch] [--json]".
func cmdLeader(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord leader NAME [--watch] [--json | -o json] [--database-url URL]", leaderDescription)
	dbURL := dbFlag(fs)
	watch := fs.Bool("watch", false, "follow: print every change until interrupted")
	interval := fs.Duration("interval", time.Second, "with --watch, how often the leader is read again besides notifications")
	out := addOutputFlags(fs)
	var name string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return a.usageError("unexpected argument %q", rest[0])
	}
	if name == "" {
		return a.usageError("the election NAME is required")
	}
	if *interval <= 0 {
		return a.usageError("--interval must be positive")
	}
	asJSON, err := out.isJSON()
	if err != nil {
		return a.usageError("%v", err)
	}
	ctx, cancel := a.bounded(queryTimeout)
	conn, err := a.openSchema(ctx, *dbURL)
	cancel()
	if err != nil {
		return a.fail(err)
	}
	defer func() { closeConn(conn) }()
	if !*watch {
		ctx, cancel := a.bounded(queryTimeout)
		defer cancel()
		l, err := readLeader(ctx, conn, name)
		if err != nil {
			return a.fail(err)
		}
		if err := printLeader(a.stdout, name, l, asJSON, false); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	if err := listenLeader(a, conn); err != nil {
		return a.fail(err)
	}
	var last *leaderRow
	first := true
	for {
		ctx, cancel := a.bounded(queryTimeout)
		l, err := readLeader(ctx, conn, name)
		cancel()
		if err != nil && a.ctx.Err() != nil && !first {
			// Interrupted during a read (one every --interval), not only
			// during the wait: the normal end of a watch too.
			return exitOK
		}
		if err != nil {
			return a.fail(err)
		}
		if first || !sameLeader(l, last) {
			if err := printLeader(a.stdout, name, l, asJSON, true); err != nil {
				return a.fail(err)
			}
			first, last = false, l
		}
		// A read deadline, not a context, bounds the wait: pgx would send
		// a cancel request (a connection of its own) at every timeout.
		raw := conn.PgConn().Conn()
		_ = raw.SetReadDeadline(time.Now().Add(*interval))
		err = conn.PgConn().WaitForNotification(context.Background())
		if !conn.IsClosed() {
			_ = raw.SetReadDeadline(time.Time{})
		}
		if a.ctx.Err() != nil {
			return exitOK // interrupted: the normal end of a watch
		}
		var netErr net.Error
		if err != nil && !(errors.As(err, &netErr) && netErr.Timeout() && !conn.IsClosed()) {
			if !conn.IsClosed() {
				return a.fail(fmt.Errorf("waiting for leader changes: %w", err))
			}
			// The connection broke: open a new one and listen again (the
			// read below reconciles whatever changed meanwhile).
			fmt.Fprintf(a.stderr, "pgcoord leader: connection lost (%v); reconnecting\n", err)
			closeConn(conn)
			ctx, cancel := a.bounded(queryTimeout)
			conn, err = a.openSchema(ctx, *dbURL)
			cancel()
			if err != nil {
				return a.fail(err)
			}
			if err := listenLeader(a, conn); err != nil {
				return a.fail(err)
			}
		}
	}
}

// listenLeader subscribes conn to leader changes, within queryTimeout.
func listenLeader(a *app, conn *pgx.Conn) error {
	ctx, cancel := a.bounded(queryTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "LISTEN pgcoord_leader"); err != nil {
		return fmt.Errorf("listening for leader changes: %w", err)
	}
	return nil
}

// leaderRow is an election's current leader; nil means none.
type leaderRow struct {
	MemberID string
	Value    string
	Token    int64
	Since    pgtype.Timestamptz
}

func readLeader(ctx context.Context, conn *pgx.Conn, election string) (*leaderRow, error) {
	row, err := queries.CurrentLeader(ctx, conn, election)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the leader of %q: %w", election, err)
	}
	return &leaderRow{row.MemberID, row.Value, row.Token, row.Since}, nil
}

func sameLeader(a, b *leaderRow) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.MemberID == b.MemberID && a.Token == b.Token && a.Value == b.Value
}

// leaderJSON is the --json form: leader is null when there is none.
type leaderJSON struct {
	Election string          `json:"election"`
	Leader   *leaderJSONTerm `json:"leader"`
}

type leaderJSONTerm struct {
	MemberID string   `json:"member_id"`
	Value    string   `json:"value"`
	Token    int64    `json:"token"`
	Since    jsonTime `json:"since"`
}

// printLeader prints one leader: a line ("NAME: no leader", or member,
// value, token and since), or JSON (compact, one per line, when watching).
func printLeader(w io.Writer, election string, l *leaderRow, asJSON, watching bool) error {
	if asJSON {
		v := leaderJSON{Election: election}
		if l != nil {
			v.Leader = &leaderJSONTerm{l.MemberID, l.Value, l.Token, jsonTime{l.Since}}
		}
		if !watching {
			return writeJSON(w, v)
		}
		b, err := jsonLine(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, b)
		return err
	}
	if l == nil {
		_, err := fmt.Fprintf(w, "%s: no leader\n", cell(election))
		return err
	}
	// since in the tables' format (local zone, milliseconds, offset),
	// quoted like value since it has spaces.
	_, err := fmt.Fprintf(w, "%s: %s value=%s token=%s since=%s\n", cell(election), cell(l.MemberID),
		strconv.Quote(l.Value), strconv.FormatInt(l.Token, 10), strconv.Quote(fmtTime(l.Since, cliStyle.timeLayout)))
	return err
}

// jsonLine is v as compact JSON, for one line per event.
func jsonLine(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
