package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgcoord/pgcoord"
)

// cmdPrune deletes old member rows and the rows of unused names, as
// coordinators do by themselves every Retention/4.
func cmdPrune(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord prune [--older-than 24h] [--json | -o json] [--database-url URL]",
		"Deletes the rows of members stopped, or silent (crashed, cut off), for longer than\n"+
			"--older-than, and their group memberships; and the registrations in pgcoord.locks,\n"+
			"the fencing tokens in pgcoord.fences, the semaphore limits in pgcoord.semaphores and\n"+
			"the last terms in pgcoord.elections of names nobody has used for that long and nobody\n"+
			"holds or waits for now. Running\n"+
			"members and names in use are never deleted. Coordinators do the same by themselves\n"+
			"(Config.Retention); this is for a cron job, or after changing the retention.")
	dbURL := dbFlag(fs)
	olderThan := fs.Duration("older-than", pgcoord.DefaultRetention, fmt.Sprintf("retention (at least %v)", pgcoord.MinRetention))
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
	if *olderThan < pgcoord.MinRetention {
		return a.usageError("--older-than must be at least %v, got %v", pgcoord.MinRetention, *olderThan)
	}
	ctx, cancel := a.bounded(queryTimeout)
	defer cancel()
	conn, err := a.openSchema(ctx, *dbURL)
	if err != nil {
		return a.fail(err)
	}
	defer closeConn(conn)
	if err := requireCurrentSchema(ctx, conn); err != nil {
		return a.fail(err)
	}
	res, err := pgcoord.PruneConn(ctx, conn, *olderThan)
	if err != nil {
		return a.fail(err)
	}
	if asJSON {
		err = writeJSON(a.stdout, pruneJSON{res.Members, res.Names, res.GroupMembers, res.Fences, res.SemaphoreLimits, res.Elections, olderThan.Seconds()})
	} else {
		_, err = fmt.Fprintf(a.stdout, "pruned %d member rows, %d group memberships, %d lock names, %d fences, %d semaphore limits and %d elections unused for %v\n",
			res.Members, res.GroupMembers, res.Names, res.Fences, res.SemaphoreLimits, res.Elections, fmtRetention(*olderThan))
	}
	if err != nil {
		return a.fail(err)
	}
	return exitOK
}

// fmtRetention prints 24h0m0s as 24h and 1h30m0s as 1h30m.
func fmtRetention(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// pruneJSON is prune's --json output.
type pruneJSON struct {
	Members          int64   `json:"members"`
	Names            int64   `json:"names"`
	GroupMembers     int64   `json:"group_members"`
	Fences           int64   `json:"fences"`
	SemaphoreLimits  int64   `json:"semaphore_limits"`
	Elections        int64   `json:"elections"`
	OlderThanSeconds float64 `json:"older_than_seconds"`
}
