package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pgcoord/pgcoord/db"
)

// cmdMembers lists pgcoord.members: the live ones, or with --all every row.
func cmdMembers(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord members [--all] [--json | -o json] [--database-url URL]",
		"Lists the live members (coordinators running now). A member is live while its\n"+
			"control session holds its member lock; HEARTBEAT_AGE is how long ago it last\n"+
			"wrote its row. With --all, also the rows of stopped members (Stop was called)\n"+
			"and stale ones (not stopped, but their sessions are gone: crashed or cut off).\n"+
			"Tables print times in the local zone, with the zone; JSON prints RFC 3339 in UTC.")
	dbURL := dbFlag(fs)
	all := fs.Bool("all", false, "also list stopped and stale members")
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
	rows, err := queries.ListMembers(ctx, conn)
	if err != nil {
		return a.fail(fmt.Errorf("listing members: %w", err))
	}
	now, err := serverNow(ctx, conn)
	if err != nil {
		return a.fail(err)
	}
	if !*all {
		rows = liveOnly(rows)
	}
	if asJSON {
		if err := writeJSON(a.stdout, membersJSON(rows, now)); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	if len(rows) == 0 {
		if *all {
			fmt.Fprintln(a.stdout, "no members")
		} else {
			fmt.Fprintln(a.stdout, "no live members (--all also lists stopped and stale ones)")
		}
		return exitOK
	}
	writeMembers(a.stdout, rows, now, cliStyle)
	return exitOK
}

func liveOnly(rows []db.ListMembersRow) []db.ListMembersRow {
	var out []db.ListMembersRow
	for _, r := range rows {
		if r.Live {
			out = append(out, r)
		}
	}
	return out
}

// memberJSON is one member in --json output.
type memberJSON struct {
	MemberID      string   `json:"member_id"`
	Prefix        string   `json:"prefix"`
	AgentID       string   `json:"agent_id"`
	Hostname      string   `json:"hostname"`
	PID           int32    `json:"pid"`
	StartedAt     jsonTime `json:"started_at"`
	LastHeartbeat jsonTime `json:"last_heartbeat"`
	StoppedAt     jsonTime `json:"stopped_at"`
	// HeartbeatAgeSeconds is measured against the server's clock.
	HeartbeatAgeSeconds float64 `json:"heartbeat_age_seconds"`
	Live                bool    `json:"live"`
	// State is "live", "stopped" or "stale" (see memberState).
	State string `json:"state"`
}

// membersJSON turns rows into their JSON form; never nil, so that no
// members prints [].
func membersJSON(rows []db.ListMembersRow, now time.Time) []memberJSON {
	out := make([]memberJSON, 0, len(rows))
	for _, r := range rows {
		m := memberJSON{
			MemberID: r.MemberID, Prefix: r.Prefix, AgentID: r.AgentID, Hostname: r.Hostname, PID: r.Pid,
			StartedAt: jsonTime{r.StartedAt}, LastHeartbeat: jsonTime{r.LastHeartbeat}, StoppedAt: jsonTime{r.StoppedAt},
			Live: r.Live, State: "stale",
		}
		if r.LastHeartbeat.Valid {
			m.HeartbeatAgeSeconds = max(now.Sub(r.LastHeartbeat.Time), 0).Seconds()
		}
		switch {
		case r.Live:
			m.State = "live"
		case r.StoppedAt.Valid:
			m.State = "stopped"
		}
		out = append(out, m)
	}
	return out
}

// memberState is the LIVE column: "yes", or why not.
func memberState(r db.ListMembersRow) string {
	switch {
	case r.Live:
		return "yes"
	case r.StoppedAt.Valid:
		return "no (stopped)"
	default:
		// Not stopped, yet its member lock is gone: the process died or its
		// control session was cut off (it may still be reconnecting).
		return "no (stale)"
	}
}

// writeMembers prints rows as an aligned table; heartbeat ages are relative
// to now, the server's clock.
func writeMembers(w io.Writer, rows []db.ListMembersRow, now time.Time, st tableStyle) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%sMEMBER_ID\tHOSTNAME\tPID\tSTARTED_AT\tLAST_HEARTBEAT\tHEARTBEAT_AGE\tLIVE\n", st.indent)
	for _, r := range rows {
		age := "-"
		if r.LastHeartbeat.Valid {
			age = fmtAge(now.Sub(r.LastHeartbeat.Time))
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", st.indent,
			cell(r.MemberID), cell(r.Hostname), strconv.Itoa(int(r.Pid)),
			fmtTime(r.StartedAt, st.timeLayout), fmtTime(r.LastHeartbeat, st.timeLayout),
			age, memberState(r))
	}
	_ = tw.Flush()
}
