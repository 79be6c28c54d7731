package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgcoord/pgcoord"
)

var electDescription = `Runs a command while this process leads the election NAME (etcdctl elect,
client-go leaderelection): starts a coordinator (a member of the group),
campaigns for NAME with --value, waiting in line behind the current leader,
then runs the command with stdin, stdout and stderr passed through, resigns
when the command exits, and exits with the command's exit status.

If leadership is lost while the command runs (its database session died or was
terminated, noticed within about two --heartbeat), the command's process group
gets SIGTERM, then SIGKILL after --grace (or sooner, by the deadline of the
last good look at the leadership), and pgcoord exits 75, as run does
when its lock is lost. With --timeout, pgcoord exits 3 (or
--conflict-exit-code) without running the command if it is not leader by then.

The command runs in its own process group, and SIGINT, SIGTERM and SIGHUP sent
to pgcoord are forwarded to it. It finds the election's full name in
$PGCOORD_ELECTION, the value in $PGCOORD_LEADER_VALUE and the term's fencing
token in $PGCOORD_FENCING_TOKEN (terms' tokens increase). "pgcoord leader NAME"
shows the leader.

` + guardGuarantee("leadership")

// cmdElect implements "pgcoord elect NAME [flags] -- CMD ARGS".
func cmdElect(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord elect NAME [--value V] [--timeout 10s] [--prefix P] [flags] -- CMD [ARGS...]", electDescription)
	dbURL := dbFlag(fs)
	value := fs.String("value", "", "value published with the leadership, UTF-8, at most 1 MiB (default: the agent id)")
	timeout := fs.Duration("timeout", 0, "campaign at most this long, then exit 3 (default: as long as it takes)")
	conflictCode := fs.Int("conflict-exit-code", exitBusy, "exit status when not leader within --timeout")
	prefix := fs.String("prefix", "", "namespace prepended to the election name and the member id")
	grace := fs.Duration("grace", 5*time.Second, "after leadership is lost, time between SIGTERM and SIGKILL to the command")
	agentID := fs.String("agent-id", "", "agent id of this member (default elect-HOSTNAME-PID)")
	skipMigrations := fs.Bool("skip-migrations", false, "do not apply the schema's migrations (for a role that may not change it: see docs/grants.sql)")
	heartbeat := fs.Duration("heartbeat", pgcoord.DefaultHeartbeatInterval, "heartbeat interval: a lost leadership is noticed within about two intervals")
	// NAME may come before the flags (elect NAME --value V -- CMD) or after
	// them (elect --value V NAME -- CMD).
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case name == "":
		return a.usageError("the election NAME is required (pgcoord elect NAME -- CMD ARGS...)")
	case len(rest) == 0:
		return a.usageError("no command given (pgcoord elect NAME -- CMD ARGS...)")
	case *timeout < 0 || (set["timeout"] && *timeout == 0):
		return a.usageError("--timeout must be positive")
	case *grace < 0:
		return a.usageError("--grace must not be negative")
	case *conflictCode < 0 || *conflictCode > 255:
		return a.usageError("--conflict-exit-code must be between 0 and 255, got %d", *conflictCode)
	case !utf8.ValidString(*value):
		// Checked here, before connecting, as Campaign would refuse it
		// (ErrInvalidValue) only once the member had started. An argument
		// cannot hold a NUL.
		return a.usageError("--value must be UTF-8")
	case len(*value) > pgcoord.MaxElectionValueLen:
		return a.usageError("--value is %d bytes, more than %d", len(*value), pgcoord.MaxElectionValueLen)
	}
	if *agentID == "" {
		*agentID = cliAgentID("elect")
	}
	if !set["value"] {
		*value = *agentID
	}

	url, err := a.database(*dbURL)
	if err != nil {
		return a.fail(err)
	}
	c, err := pgcoord.New(pgcoord.Config{
		ConnString:        url,
		AgentID:           *agentID,
		Prefix:            *prefix,
		HeartbeatInterval: *heartbeat,
		SkipMigrations:    *skipMigrations,
		Logger:            slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return a.usageError("%v", strings.TrimPrefix(err.Error(), "pgcoord: "))
	}
	if err := c.Start(a.ctx); err != nil {
		return a.fail(err)
	}
	defer stopMember(a, c, url)

	full := *prefix + name
	e := c.Election(name)
	cctx := a.ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(a.ctx, *timeout)
		defer cancel()
	}
	if err := e.Campaign(cctx, *value); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && a.ctx.Err() == nil {
			fmt.Fprintf(a.stderr, "pgcoord elect: not leader of %q after %v%s; not running the command\n",
				full, *timeout, currentLeader(url, full))
			return *conflictCode
		}
		return a.fail(fmt.Errorf("campaigning for %q: %w", full, err))
	}
	return runLeading(a, e, full, *value, rest, *grace, *heartbeat)
}

// currentLeader describes who leads full, best effort, for messages.
func currentLeader(url, full string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := connect(ctx, url, "pgcoord-cli")
	if err != nil {
		return ""
	}
	defer closeConn(conn)
	row, err := queries.CurrentLeader(ctx, conn, full)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" (led by %s, value %q)", row.MemberID, row.Value)
}

// runLeading runs argv while e leads and returns pgcoord's exit code: it
// stops the command as run does when its lock is lost.
func runLeading(a *app, e *pgcoord.Election, full, value string, argv []string, grace, heartbeat time.Duration) int {
	resign := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Resign(ctx); err != nil && !errors.Is(err, pgcoord.ErrNotLeader) {
			fmt.Fprintf(a.stderr, "pgcoord elect: resigning %q: %v\n", full, err)
		}
	}
	env := []string{"PGCOORD_ELECTION=" + full, "PGCOORD_LEADER_VALUE=" + value,
		"PGCOORD_FENCING_TOKEN=" + strconv.FormatInt(e.Token(), 10)}
	g := guard{
		valid: func() bool {
			select {
			case <-e.Done(): // Done looks at the lease first
				return false
			default:
				return true
			}
		},
		lost: e.Done(),
		lostWhy: func() string {
			return fmt.Sprintf("lost leadership of %q while the command was running", full)
		},
		heartbeat: heartbeat,
	}
	ps, lost, code := runGuarded(a, "elect", argv, env, g, grace)
	defer resign()
	if ps == nil {
		return code
	}
	if ps.silent {
		fmt.Fprintf(a.stderr, "pgcoord elect: the watchdog stopped the command (%s) because pgcoord was silent too long: leadership of %q may have been handed on; exiting %d\n",
			describeExit(ps.status), full, exitLockLost)
		return exitLockLost
	}
	if lost || !e.IsLeader() {
		// Lost as the command finished counts as lost too: part of its
		// work may have run without leadership.
		fmt.Fprintf(a.stderr, "pgcoord elect: the command ended (%s) after leadership of %q was lost; exiting %d\n",
			describeExit(ps.status), full, exitLockLost)
		return exitLockLost
	}
	return exitStatus(ps.status)
}
