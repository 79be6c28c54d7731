package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord"
)

// The fleet run: coordinators in several child processes, each with
// goroutines that loop acquire (Wait) a random one of the shared names,
// hold it a moment, release. A separate plain pgx client (the application)
// connects and runs SELECT 1 throughout and counts its failures, and a
// monitor samples pg_stat_activity for the peak of backends. The baseline
// does the same work the way most Go advisory-lock libraries do: each holder
// or waiter takes a connection of its own from a pool and blocks in
// pg_advisory_lock on it.

const (
	childModeEnv = "PGCOORD_FLEET_CHILD"
	childConfEnv = "PGCOORD_FLEET_CONF"
	// appRole is the role the coordinators, the baseline and the probe
	// connect as: not a superuser, so the server's reserved slots are not
	// theirs, as for an application.
	appRole = "fleet_app"
)

// childConf is what a child process runs.
type childConf struct {
	URL        string        `json:"url"`
	Mode       string        `json:"mode"` // "pgcoord" or "baseline"
	Coords     int           `json:"coords"`
	Goroutines int           `json:"goroutines"`
	Names      int           `json:"names"`
	Hold       time.Duration `json:"hold"`
	Start      time.Time     `json:"start"`
	Duration   time.Duration `json:"duration"`
	Proc       int           `json:"proc"`
}

// childResult is what a child reports on stdout when done.
type childResult struct {
	Acquired int64           `json:"acquired"`
	Waits    []time.Duration `json:"waits"`
	Errors   int64           `json:"errors"`
	FirstErr string          `json:"first_err,omitempty"`
	// ErrKinds counts acquire errors by kind (errKind), so one run tells
	// apart what failed, not only what failed first.
	ErrKinds  map[string]int64 `json:"err_kinds,omitempty"`
	StartErrs int              `json:"start_errs"`
	// Long lists the waits of at least longWaitMin, with when they began,
	// their name and coordinator (-tail), to see where the tail comes from.
	Long []longWait `json:"long,omitempty"`
	// Grants counts acquisitions by name and by the second of the run
	// they were granted in (-tail), to see a name that stalls.
	Grants map[int][]int `json:"grants,omitempty"`
}

func fleetMain(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	procs := fs.Int("procs", 5, "child processes")
	coords := fs.Int("coords", 50, "coordinators in all (pgcoord), spread over the processes")
	goroutines := fs.Int("goroutines", 20, "goroutines per coordinator (the baseline runs as many per process in all)")
	names := fs.Int("names", 100, "shared lock names")
	hold := fs.Duration("hold", time.Millisecond, "how long each acquisition holds its lock")
	duration := fs.Duration("duration", 30*time.Second, "how long each mode runs")
	maxConns := fs.Int("max-connections", 100, "the throwaway server's max_connections")
	modes := fs.String("modes", "pgcoord,baseline", "modes to run, in order")
	statements := fs.Int("statements", 0, "print each mode's top N statements by server time (pg_stat_statements; 0: none)")
	notifications := fs.Bool("notifications", false, "count each mode's NOTIFYs by channel (a listener of its own) and print them per acquisition")
	tail := fs.Int("tail", 0, "print each mode's N longest waits with when they began, their name and coordinator (0: none)")
	_ = fs.Parse(args)

	ctx := context.Background()
	settings := map[string]string{"max_connections": strconv.Itoa(*maxConns)}
	if *statements > 0 {
		maps.Copy(settings, statementSettings)
	}
	base, cleanup, err := throwawayServer(settings)
	defer cleanup()
	if err != nil {
		return err
	}
	appURL, err := setUpApp(ctx, base)
	if err != nil {
		return err
	}
	fmt.Printf("command: make fleet (bench/fleet run -procs %d -coords %d -goroutines %d -names %d -hold %v -duration %v -max-connections %d)\n",
		*procs, *coords, *goroutines, *names, *hold, *duration, *maxConns)
	fmt.Printf("server: max_connections=%d (3 reserved for superusers); every client connects as a plain role\n\n", *maxConns)
	fmt.Println("| mode | backends (peak, all clients) | acquisitions/s | wait p50 | wait p99 | longest wait | longest / mean | acquire errors | app SELECT 1 connection errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, mode := range splitComma(*modes) {
		if *statements > 0 {
			if err := resetStatements(ctx, base); err != nil {
				return err
			}
		}
		var counted func() (map[string]int64, error)
		if *notifications {
			nctx, stop := context.WithCancel(ctx)
			ready := make(chan struct{})
			var counts map[string]int64
			var nerr error
			done := make(chan struct{})
			go func() {
				defer close(done)
				counts, nerr = countNotifications(nctx, base, ready)
			}()
			<-ready
			counted = func() (map[string]int64, error) {
				stop()
				<-done
				return counts, nerr
			}
		}
		r, acquired, err := runMode(ctx, base, appURL, childConf{
			Mode: mode, Goroutines: *goroutines, Names: *names, Hold: *hold, Duration: *duration,
		}, *procs, *coords, *tail)
		var counts map[string]int64
		var nerr error
		if counted != nil {
			counts, nerr = counted()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		fmt.Println(r)
		if nerr != nil {
			return fmt.Errorf("%s: counting notifications: %w", mode, nerr)
		}
		if counted != nil {
			printNotifications(mode, counts, acquired)
		}
		if *statements > 0 {
			if err := printStatements(ctx, base, mode, *statements, acquired); err != nil {
				return err
			}
		}
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// setUpApp creates the application's role, lets it migrate pgcoord's schema
// (so it owns it) and returns its URL.
func setUpApp(ctx context.Context, base string) (string, error) {
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+appRole+" LOGIN PASSWORD '"+appRole+"'"); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "GRANT CREATE ON DATABASE "+admin.Config().Database+" TO "+appRole); err != nil {
		return "", err
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(appRole, appRole)
	appURL := u.String()
	if err := pgcoord.Migrate(ctx, appURL); err != nil {
		return "", err
	}
	return appURL, nil
}
