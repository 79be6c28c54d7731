package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgcoord/pgcoord"
)

var runDescription = `Runs a command while holding the lock NAME, like flock(1) or consul lock: starts
a coordinator (a member of the group), acquires NAME, runs the command with
stdin, stdout and stderr passed through, releases NAME when the command exits,
and exits with the command's exit status.

If the lock cannot be acquired (busy with --nowait, or still busy after
--timeout), pgcoord exits 3 (or --conflict-exit-code) without running the
command. Errors (no database: 78, database unreachable: 69, any other: 1)
are told apart from contention the same way.

If the lock is lost while the command runs (its database session died or was
terminated, noticed within about one --heartbeat), the command's process group
gets SIGTERM, then SIGKILL after --grace, or sooner, by the deadline of the
last good look at the lock (1.75 --heartbeat after it), when that comes first:
the server may hand the lock on from then. pgcoord exits 75.

The command runs in its own process group, so that a stop reaches every process
it started; SIGINT, SIGTERM and SIGHUP sent to pgcoord are forwarded to that
group. (A command that reads the terminal is therefore not supported.) It finds
the lock's full name in $PGCOORD_LOCK and its fencing token in
$PGCOORD_FENCING_TOKEN: tokens of successive holders of a name increase, so a
store that rejects writes with a token lower than one it has seen cannot be
clobbered by a holder that lost the lock without knowing.

` + guardGuarantee("lock")

// cmdRun implements "pgcoord run".
func cmdRun(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord run --lock NAME [--wait|--nowait|--timeout 10s] [--prefix P] [flags] -- CMD [ARGS...]", runDescription)
	dbURL := dbFlag(fs)
	name := fs.String("lock", "", "`NAME` of the lock to hold (required)")
	fs.Bool("wait", false, "wait for the lock as long as it takes (the default)")
	nowait := fs.Bool("nowait", false, "exit 3 at once if the lock is busy")
	timeout := fs.Duration("timeout", 0, "wait at most this long for the lock, then exit 3")
	conflictCode := fs.Int("conflict-exit-code", exitBusy, "exit status when the lock cannot be acquired (like flock -E)")
	prefix := fs.String("prefix", "", "namespace prepended to the lock name and the member id")
	grace := fs.Duration("grace", 5*time.Second, "after the lock is lost, time between SIGTERM and SIGKILL to the command")
	agentID := fs.String("agent-id", "", "agent id of this member (default run-HOSTNAME-PID)")
	skipMigrations := fs.Bool("skip-migrations", false, "do not apply the schema's migrations (for a role that may not change it: see docs/grants.sql)")
	heartbeat := fs.Duration("heartbeat", pgcoord.DefaultHeartbeatInterval, "heartbeat interval: a lost lock is noticed within about one interval")
	if code, done := parseFlags(fs, args); done {
		return code
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *name == "":
		return a.usageError("--lock NAME is required")
	case fs.NArg() == 0:
		return a.usageError("no command given (pgcoord run --lock NAME -- CMD ARGS...)")
	case set["nowait"] && set["timeout"], set["wait"] && (set["nowait"] || set["timeout"]):
		return a.usageError("--wait, --nowait and --timeout are alternatives; give one")
	case *timeout < 0 || (set["timeout"] && *timeout == 0):
		return a.usageError("--timeout must be positive (use --nowait not to wait)")
	case *grace < 0:
		return a.usageError("--grace must not be negative")
	case *conflictCode < 0 || *conflictCode > 255:
		return a.usageError("--conflict-exit-code must be between 0 and 255, got %d", *conflictCode)
	}
	blocking := pgcoord.Wait
	switch {
	case *nowait:
		blocking = pgcoord.NoWait
	case *timeout > 0:
		blocking = pgcoord.Timeout(*timeout)
	}
	if *agentID == "" {
		*agentID = cliAgentID("run")
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
		// Warnings (heartbeat failures, reconnects, lost locks) matter to
		// whoever watches a locked job; the info chatter does not.
		Logger: slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return a.usageError("%v", strings.TrimPrefix(err.Error(), "pgcoord: "))
	}
	if err := c.Start(a.ctx); err != nil {
		return a.fail(err)
	}
	defer stopMember(a, c, url)

	l := c.GetLock(*name)
	ok, err := l.Acquire(a.ctx, blocking)
	if err != nil {
		return a.fail(fmt.Errorf("acquiring lock %q: %w", *prefix+*name, err))
	}
	if !ok {
		why := "is busy"
		if blocking != pgcoord.NoWait {
			why = fmt.Sprintf("is still busy after %v", *timeout)
		}
		fmt.Fprintf(a.stderr, "pgcoord run: lock %q %s%s; not running the command\n",
			*prefix+*name, why, heldBy(url, *prefix+*name))
		return *conflictCode
	}
	return runLocked(a, l, *prefix+*name, fs.Args(), *grace, *heartbeat)
}

// heldBy describes who holds the lock full, best effort: it is only there
// to make the busy message more useful.
func heldBy(url, full string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := connect(ctx, url, "pgcoord-cli")
	if err != nil {
		return ""
	}
	defer closeConn(conn)
	rows, err := queries.ListHeldLocks(ctx, conn)
	if err != nil {
		return ""
	}
	var holders []string
	for _, r := range rows {
		if r.Name == full && r.Granted && r.MemberID != "" {
			holders = append(holders, r.MemberID)
		}
	}
	if len(holders) == 0 {
		return ""
	}
	return " (held by " + strings.Join(holders, ", ") + ")"
}

// runLocked runs argv while l is held and returns pgcoord's exit code.
func runLocked(a *app, l *pgcoord.Lock, full string, argv []string, grace, heartbeat time.Duration) int {
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Release(ctx); err != nil && !errors.Is(err, pgcoord.ErrLockLost) {
			fmt.Fprintf(a.stderr, "pgcoord run: releasing lock %q: %v\n", full, err)
		}
	}
	env := []string{"PGCOORD_LOCK=" + full, "PGCOORD_FENCING_TOKEN=" + strconv.FormatInt(l.Token(), 10)}
	g := guard{
		valid: func() bool {
			select {
			case <-l.Lost(): // Lost looks at the lease first
				return false
			default:
				return true
			}
		},
		lost: l.Lost(),
		lostWhy: func() string {
			// Release of a lost hold returns why it was lost, without I/O.
			return fmt.Sprintf("lost lock %q while the command was running (%v)", full, l.Release(context.Background()))
		},
		heartbeat: heartbeat,
	}
	ps, lockLost, code := runGuarded(a, "run", argv, env, g, grace)
	if ps == nil {
		release()
		return code
	}
	if ps.silent {
		fmt.Fprintf(a.stderr, "pgcoord run: the watchdog stopped the command (%s) because pgcoord was silent too long: lock %q may have been handed on; exiting %d\n",
			describeExit(ps.status), full, exitLockLost)
		release()
		return exitLockLost
	}
	if lockLost {
		fmt.Fprintf(a.stderr, "pgcoord run: the command ended (%s) after lock %q was lost; exiting %d\n",
			describeExit(ps.status), full, exitLockLost)
		return exitLockLost
	}
	select {
	case <-l.Lost():
		// Lost just as the command finished: part of its work may have run
		// unprotected, so it counts as lost all the same.
		fmt.Fprintf(a.stderr, "pgcoord run: lock %q was lost as the command finished (%v); exiting %d\n",
			full, l.Release(context.Background()), exitLockLost)
		return exitLockLost
	default:
	}
	release()
	return exitStatus(ps.status)
}

// describeExit says how the command ended, for messages.
func describeExit(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("killed by signal %d, %v", int(ws.Signal()), ws.Signal())
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// exitStatus is the status a shell would report for the command: its exit
// code, or 128+N when signal N killed it.
func exitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ws.ExitStatus()
}
