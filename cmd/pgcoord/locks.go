package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/pgcoord/pgcoord/db"
)

// cmdLocks lists pgcoord.held_locks.
func cmdLocks(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord locks [--json | -o json] [--database-url URL]",
		"Lists the pgcoord locks held or waited for now, from the view pgcoord.held_locks:\n"+
			"full name (prefix included), advisory-lock key, mode, member, whether granted\n"+
			"(\"waiting\" for a waiter), since when, and the server backend pid of the session.\n"+
			"Tables print times in the local zone, with the zone; JSON prints RFC 3339 in UTC.")
	dbURL := dbFlag(fs)
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
	ctx, cancel := a.bounded(queryTimeout)
	defer cancel()
	conn, err := a.openSchema(ctx, *dbURL)
	if err != nil {
		return a.fail(err)
	}
	defer closeConn(conn)
	rows, err := queries.ListHeldLocks(ctx, conn)
	if err != nil {
		return a.fail(fmt.Errorf("listing locks: %w", err))
	}
	if asJSON {
		if err := writeJSON(a.stdout, heldLocksJSON(rows)); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	if len(rows) == 0 {
		fmt.Fprintln(a.stdout, "no locks held")
		return exitOK
	}
	writeHeldLocks(a.stdout, rows, cliStyle)
	return exitOK
}

// writeHeldLocks prints rows as an aligned table.
func writeHeldLocks(w io.Writer, rows []db.ListHeldLocksRow, st tableStyle) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	key := func(s string) string {
		if st.showKey {
			return s + "\t"
		}
		return ""
	}
	fmt.Fprintf(tw, "%sNAME\t%sMODE\tMEMBER_ID\tGRANTED\tSINCE\tBACKEND_PID\n", st.indent, key("KEY"))
	for _, r := range rows {
		granted := "yes"
		if !r.Granted {
			granted = "waiting"
		}
		// A lock taken outside pgcoord's registry has no name; one whose
		// session is not a live member's has no member.
		fmt.Fprintf(tw, "%s%s\t%s%s\t%s\t%s\t%s\t%d\n", st.indent,
			cell(r.Name), key(strconv.FormatInt(r.Key, 10)), r.Mode, cell(r.MemberID),
			granted, fmtTime(r.Since, st.timeLayout), r.BackendPid)
	}
	_ = tw.Flush()
}

// heldLockJSON is one row of pgcoord.held_locks in --json output.
type heldLockJSON struct {
	// Name is the full name (prefix included); empty for a key that is not
	// in pgcoord's registry.
	Name string `json:"name"`
	Key  int64  `json:"key"`
	Mode string `json:"mode"`
	// MemberID is empty for a session that is no live member's.
	MemberID string   `json:"member_id"`
	Granted  bool     `json:"granted"`
	Since    jsonTime `json:"since"`
	// BackendPID is the server backend holding or waiting (pg_locks.pid).
	BackendPID int32 `json:"backend_pid"`
}

// heldLocksJSON turns rows into their JSON form; never nil, so that no
// locks prints [].
func heldLocksJSON(rows []db.ListHeldLocksRow) []heldLockJSON {
	out := make([]heldLockJSON, 0, len(rows))
	for _, r := range rows {
		out = append(out, heldLockJSON{Name: r.Name, Key: r.Key, Mode: r.Mode, MemberID: r.MemberID,
			Granted: r.Granted, Since: jsonTime{r.Since}, BackendPID: r.BackendPid})
	}
	return out
}
