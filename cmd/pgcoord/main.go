// Command pgcoord is the command-line tool of pgcoord, named distributed
// locks on PostgreSQL advisory locks.
//
//	pgcoord migrate [--status]            apply the schema, or report its version
//	pgcoord members [--all] [--json]      list the members
//	pgcoord locks [--json]                list held and awaited locks
//	pgcoord prune [--older-than 24h]      delete old member rows and unused names' rows
//	pgcoord run --lock NAME -- CMD ARGS   run CMD while holding NAME (like flock(1))
//	pgcoord elect NAME -- CMD ARGS        run CMD while leader of election NAME
//	pgcoord leader NAME [--watch]         print (or follow) the leader of NAME
//	pgcoord demo                          three agents sharing locks, and a crash
//
// Every command takes --database-url, default $DATABASE_URL; one of them is
// required, except by demo, which otherwise starts a throwaway PostgreSQL
// server and removes it when it exits. Run "pgcoord help" for the exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// Exit codes, documented in usageText. A command run by "pgcoord run" passes
// its own status through, so these can also be the command's; that ambiguity
// is the same as flock(1)'s, and --conflict-exit-code moves the busy code out
// of the command's range (flock -E).
const (
	exitOK = 0
	// exitError is any failure not listed below: a query failed, the server
	// refused the login, the schema is missing.
	exitError = 1
	exitUsage = 2 // bad command line
	// exitBusy: run could not take the lock (busy under --nowait, or still
	// busy after --timeout) and did not run the command. Distinct from
	// exitError so that a script can tell contention from a fault.
	exitBusy = 3
	// exitUnavailable is EX_UNAVAILABLE from sysexits.h: the database could
	// not be reached (refused, unknown host, timed out), as opposed to a
	// server that answered with an error.
	exitUnavailable = 69
	// exitLockLost is EX_TEMPFAIL from sysexits.h: the lock was lost while
	// the command ran, so the command was stopped; trying again later is the
	// usual remedy.
	exitLockLost = 75
	// exitNoDatabase is EX_CONFIG from sysexits.h: no database was given.
	// Only demo starts a throwaway server; for the other commands a private
	// server would be a lock nobody else can see.
	exitNoDatabase = 78
	exitCannotExec = 126 // run: the command exists but could not be started
	exitNotFound   = 127 // run: the command was not found
	// exitSignalBase + N: interrupted by signal N (or, for run, the command
	// was killed by signal N), as shells report it.
	exitSignalBase = 128
)

// command is one subcommand.
type command struct {
	name string
	run  func(a *app, args []string) int
}

// commands lists the subcommands in usage order. demo-agent is the hidden
// child process of demo, __guard the hidden watchdog of run and elect.
var commands = []command{
	{"migrate", cmdMigrate},
	{"members", cmdMembers},
	{"locks", cmdLocks},
	{"prune", cmdPrune},
	{"run", cmdRun},
	{"demo", cmdDemo},
	{"elect", cmdElect},
	{"leader", cmdLeader},
	{"demo-agent", cmdDemoAgent},
	{"__guard", cmdGuard},
}

func main() {
	os.Exit(pgcoordMain(os.Args[1:]))
}

// pgcoordMain runs the command line args (without the program name) and
// returns the exit code. Tests re-execute their binary into it.
func pgcoordMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usageText)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" && findCommand(rest[0]) != nil {
			// "pgcoord help run" is "pgcoord run -h".
			return pgcoordMain([]string{rest[0], "-h"})
		}
		fmt.Fprint(os.Stdout, usageText)
		return exitOK
	}
	cmd := findCommand(name)
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "pgcoord: unknown command %q\n\n%s", name, usageText)
		return exitUsage
	}
	a := newApp(name, os.Stdout, os.Stderr)
	defer a.close()
	return cmd.run(a, rest)
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// app is what every command shares: its output streams, a context cancelled
// by SIGINT/SIGTERM/SIGHUP, and the cleanups (the throwaway server) that
// must run however the command ends.
type app struct {
	name   string
	stdout io.Writer
	stderr io.Writer
	ctx    context.Context
	cancel context.CancelFunc

	sigCh   chan os.Signal
	sigDone chan struct{}

	mu sync.Mutex
	// forward, when set, receives the signals instead of the default
	// handling (run passes them on to its command).
	forward func(os.Signal)
	// caught is the first signal that cancelled ctx.
	caught syscall.Signal

	cleanupMu sync.Mutex
	cleanups  []func()
}

func newApp(name string, stdout, stderr io.Writer) *app {
	a := &app{
		name:    name,
		stdout:  stdout,
		stderr:  stderr,
		sigCh:   make(chan os.Signal, 4),
		sigDone: make(chan struct{}),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	// Catching the signals (rather than dying of them) is what lets the
	// throwaway server be removed, run's command be told, and demo's child
	// process be stopped.
	signal.Notify(a.sigCh, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go a.handleSignals()
	return a
}

// handleSignals cancels ctx on the first signal; a second one means the
// user is out of patience: clean up and exit at once.
func (a *app) handleSignals() {
	defer close(a.sigDone)
	for s := range a.sigCh {
		sig, _ := s.(syscall.Signal)
		a.mu.Lock()
		forward := a.forward
		first := a.caught == 0
		if forward == nil && first {
			a.caught = sig
		}
		a.mu.Unlock()
		switch {
		case forward != nil:
			forward(s)
		case first:
			a.cancel()
		default:
			fmt.Fprintf(a.stderr, "pgcoord: %v again; exiting now\n", s)
			a.runCleanups()
			os.Exit(exitSignalBase + int(sig))
		}
	}
}

// setForward routes the signals to f (nil restores the default handling).
func (a *app) setForward(f func(os.Signal)) {
	a.mu.Lock()
	a.forward = f
	a.mu.Unlock()
}

// interrupted returns the signal that cancelled ctx, or 0.
func (a *app) interrupted() syscall.Signal {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.caught
}

// addCleanup registers f to run when the command ends, or on a second
// signal.
func (a *app) addCleanup(f func()) {
	a.cleanupMu.Lock()
	a.cleanups = append(a.cleanups, f)
	a.cleanupMu.Unlock()
}

func (a *app) runCleanups() {
	a.cleanupMu.Lock()
	fs := a.cleanups
	a.cleanups = nil
	a.cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (a *app) close() {
	signal.Stop(a.sigCh)
	close(a.sigCh)
	<-a.sigDone
	a.cancel()
	a.runCleanups()
}

// errNoDatabase is returned by database when no URL was given.
var errNoDatabase = errors.New("no database: set DATABASE_URL or pass --database-url " +
	"(only 'pgcoord demo' starts a throwaway PostgreSQL: a private server would give locks nobody else can see)")

// fail reports err and returns the exit code for it: 128+N when a signal
// cut the command short, exitNoDatabase, exitUnavailable when the server
// could not be reached, else exitError.
func (a *app) fail(err error) int {
	if sig := a.interrupted(); sig != 0 {
		fmt.Fprintf(a.stderr, "pgcoord %s: interrupted (%v)\n", a.name, sig)
		return exitSignalBase + int(sig)
	}
	// Library errors start with "pgcoord: ", which our prefix already says.
	msg := strings.TrimPrefix(err.Error(), "pgcoord: ")
	fmt.Fprintf(a.stderr, "pgcoord %s: %s\n", a.name, msg)
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "42501" && !strings.Contains(msg, "grants.sql") {
		// The library says which grant a coordinator lacks; the commands
		// that only read say where the grants are.
		fmt.Fprintf(a.stderr, "pgcoord %s: the role lacks a grant: docs/grants.sql grants what pgcoord needs, "+
			"run it as the schema's owner (docs/operations.md, \"Grants for a least-privilege role\")\n", a.name)
	}
	switch {
	case errors.Is(err, errNoDatabase):
		return exitNoDatabase
	case unreachable(err):
		return exitUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		// Only the command's own bounds (queryTimeout, migrateTimeout) set
		// deadlines on the way here: the server answered the login, then
		// went silent, which is as unavailable as one that never answered.
		return exitUnavailable
	}
	return exitError
}

// unreachable reports whether err is a failure to reach the server at all
// (refused, unknown host, timed out), as opposed to a server that answered
// with an error (bad password, no such database), which is exitError.
func unreachable(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	return errors.As(err, &ce) && !errors.As(err, &pe)
}

// database returns the URL to use: the --database-url value, else
// $DATABASE_URL, else errNoDatabase.
func (a *app) database(flagURL string) (string, error) {
	if u := strings.TrimSpace(flagURL); u != "" {
		return u, nil
	}
	if u := strings.TrimSpace(os.Getenv("DATABASE_URL")); u != "" {
		return u, nil
	}
	return "", errNoDatabase
}

// demoDatabase is database for demo, the one command that starts a
// throwaway server (removed at exit) when none is given.
func (a *app) demoDatabase(flagURL string) (string, error) {
	url, err := a.database(flagURL)
	if !errors.Is(err, errNoDatabase) {
		return url, err
	}
	fmt.Fprintln(a.stderr, "pgcoord: DATABASE_URL is not set and --database-url not given; starting a throwaway PostgreSQL (removed at exit)")
	srv, err := pgtemp.Start(pgtemp.Options{})
	if err != nil {
		if errors.Is(err, pgtemp.ErrNoBinaries) {
			return "", fmt.Errorf("%w; or set DATABASE_URL (or --database-url) to the URL of an existing server", err)
		}
		return "", fmt.Errorf("starting a throwaway PostgreSQL: %w (set DATABASE_URL or --database-url to use an existing server)", err)
	}
	a.addCleanup(func() { _ = srv.Close() })
	return srv.URL(), nil
}

// newFlagSet returns the flag set of a subcommand, whose -h prints synopsis,
// description and the flags.
func newFlagSet(a *app, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(a.name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n", synopsis, description)
		if hasFlags(fs) {
			fmt.Fprint(fs.Output(), "\nFlags (- and -- both work):\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// dbFlag adds --database-url. Its default is resolved after parsing, not
// shown as the flag's default, so -h never prints a password from the
// environment.
func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", "", "PostgreSQL `URL` (default $DATABASE_URL; one of them is required)")
}

// parseFlags parses args; done is true when the command must return code
// at once (-h, or a bad flag, already reported by the flag package).
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK, true
	case err != nil:
		return exitUsage, true
	}
	return exitOK, false
}

// usageError reports a bad command line the flag package could not catch.
func (a *app) usageError(format string, args ...any) int {
	fmt.Fprintf(a.stderr, "pgcoord %s: %s\nRun 'pgcoord %s -h' for usage.\n", a.name, fmt.Sprintf(format, args...), a.name)
	return exitUsage
}

// noArgs rejects positional arguments for commands that take none.
func (a *app) noArgs(fs *flag.FlagSet) (int, bool) {
	if fs.NArg() > 0 {
		return a.usageError("unexpected argument %q", fs.Arg(0)), true
	}
	return exitOK, false
}
