package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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

// runMode runs one mode's children with the probe and the monitor, and
// returns its table row and how many acquisitions it made.
func runMode(ctx context.Context, base, appURL string, conf childConf, procs, coords, tail int) (string, int64, error) {
	conf.URL = appURL
	conf.Start = time.Now().Add(3 * time.Second)
	if conf.Mode == "pgcoord" {
		// Coordinators take a moment each to start.
		conf.Start = time.Now().Add(time.Duration(coords/procs)*300*time.Millisecond + 3*time.Second)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	var peak atomic.Int64
	mon, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", 0, err
	}
	defer mon.Close(ctx)
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		for runCtx.Err() == nil {
			var n int64
			if err := mon.QueryRow(runCtx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&n); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			sleep(runCtx, 20*time.Millisecond)
		}
	}()
	var probeOK, probeErrs, probeErrsBefore atomic.Int64
	var probeFirst atomic.Value
	go func() {
		defer bg.Done()
		for runCtx.Err() == nil {
			if err := probe(runCtx, appURL); err != nil {
				if runCtx.Err() != nil {
					return
				}
				probeErrs.Add(1)
				if time.Now().Before(conf.Start) {
					probeErrsBefore.Add(1) // while the clients started
				}
				probeFirst.CompareAndSwap(nil, err.Error())
			} else {
				probeOK.Add(1)
			}
			sleep(runCtx, 50*time.Millisecond)
		}
	}()

	results := make([]childResult, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for p := range procs {
		c := conf
		c.Proc = p
		c.Coords = coords / procs
		if p < coords%procs {
			c.Coords++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[p], errs[p] = runChildProcess(ctx, c)
		}()
	}
	wg.Wait()
	cancel()
	bg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", 0, err
	}

	var waits []time.Duration
	var long []longWait
	grants := map[int][]int{}
	var acquired, acqErrs int64
	starts := 0
	first := ""
	kinds := map[string]int64{}
	for _, r := range results {
		for k, n := range r.ErrKinds {
			kinds[k] += n
		}
		acquired += r.Acquired
		acqErrs += r.Errors
		starts += r.StartErrs
		waits = append(waits, r.Waits...)
		long = append(long, r.Long...)
		addGrants(grants, r.Grants)
		if first == "" {
			first = r.FirstErr
		}
	}
	slices.Sort(waits)
	label := "pgcoord (default budget: MaxSessions 4)"
	if conf.Mode == "baseline" {
		label = "baseline: a pooled connection per holder or waiter, pg_advisory_lock"
	}
	if starts > 0 {
		label += fmt.Sprintf(" (%d coordinators failed to start)", starts)
	}
	// longest / mean: how far the unluckiest wait strays from the typical
	// one, across every coordinator (issue 20's goal: at most 10).
	spread := "-"
	if len(waits) > 0 {
		var sum time.Duration
		for _, w := range waits {
			sum += w
		}
		if mean := sum / time.Duration(len(waits)); mean > 0 {
			spread = fmt.Sprintf("%.1f", float64(waits[len(waits)-1])/float64(mean))
		}
	}
	row := fmt.Sprintf("| %s | %d | %.0f | %s | %s | %s | %s | %d | %d of %d |", label, peak.Load(),
		float64(acquired)/conf.Duration.Seconds(), pct(waits, 50), pct(waits, 99), pct(waits, 100), spread,
		acqErrs, probeErrs.Load(), probeErrs.Load()+probeOK.Load())
	if first != "" {
		fmt.Fprintf(os.Stderr, "%s: first acquire error: %s\n", conf.Mode, first)
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		fmt.Fprintf(os.Stderr, "%s: %d acquire errors: %s\n", conf.Mode, kinds[k], k)
	}
	if f, ok := probeFirst.Load().(string); ok {
		fmt.Fprintf(os.Stderr, "%s: first probe error: %s (%d of the %d errors while the clients started)\n",
			conf.Mode, f, probeErrsBefore.Load(), probeErrs.Load())
	}
	if tail > 0 {
		printTail(conf.Mode, long, tail, grants, int(conf.Duration/time.Second))
	}
	return row, acquired, nil
}

// probe is the application: a connection of its own, SELECT 1, close.
func probe(ctx context.Context, appURL string) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(pctx, appURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(pctx, "SELECT 1").Scan(&one)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func pct(sorted []time.Duration, p float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return fmtDur(sorted[i])
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// runChildProcess runs conf in a re-executed copy of this binary and reads
// its result.
func runChildProcess(ctx context.Context, conf childConf) (childResult, error) {
	var r childResult
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	js, err := json.Marshal(conf)
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childModeEnv+"=fleet", childConfEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("child %d: %w", conf.Proc, err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("child %d: %w: %q", conf.Proc, err, out)
	}
	return r, nil
}

// runChild is a child process's main.
func runChild(mode string) int {
	if mode != "fleet" {
		fmt.Fprintln(os.Stderr, "unknown child mode", mode)
		return 2
	}
	var conf childConf
	if err := json.Unmarshal([]byte(os.Getenv(childConfEnv)), &conf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var r childResult
	var err error
	stop := startProfiles(conf.Mode, conf.Proc)
	defer stop()
	if conf.Mode == "baseline" {
		r, err = runBaseline(conf)
	} else {
		r, err = runPgcoord(conf)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return 0
}

// worker loops acquire, hold, release until the run ends, recording waits.
type worker struct {
	mu sync.Mutex
	r  childResult
}

func (w *worker) record(wait time.Duration, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.r.Errors++
		if w.r.FirstErr == "" {
			w.r.FirstErr = err.Error()
		}
		if w.r.ErrKinds == nil {
			w.r.ErrKinds = map[string]int64{}
		}
		w.r.ErrKinds[errKind(err)]++
		return
	}
	w.r.Acquired++
	w.r.Waits = append(w.r.Waits, wait)
}

func runPgcoord(conf childConf) (childResult, error) {
	ctx := context.Background()
	var coords []*pgcoord.Coordinator
	w := &worker{}
	logger, closeLog := childLogger("pgcoord", conf.Proc)
	defer closeLog()
	for i := range conf.Coords {
		c, err := pgcoord.New(pgcoord.Config{
			ConnString:     conf.URL,
			AgentID:        fmt.Sprintf("fleet-%d-%d", conf.Proc, i),
			SkipMigrations: true,
			Logger:         logger.With("coord", i),
		})
		if err != nil {
			return w.r, err
		}
		if err := c.Start(ctx); err != nil {
			w.r.StartErrs++
			fmt.Fprintln(os.Stderr, "start:", err)
			continue
		}
		coords = append(coords, c)
	}
	defer func() {
		for _, c := range coords {
			_ = c.Stop(ctx)
		}
	}()
	time.Sleep(time.Until(conf.Start))
	deadline := conf.Start.Add(conf.Duration)
	runCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	for ci, c := range coords {
		coord := fmt.Sprintf("%d-%d", conf.Proc, ci)
		for range conf.Goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for runCtx.Err() == nil {
					name := rand.N(conf.Names)
					l := c.GetLock(fmt.Sprintf("fleet-%d", name))
					t0 := time.Now()
					ok, err := l.Acquire(runCtx, pgcoord.Wait)
					if runCtx.Err() != nil {
						if ok {
							_ = l.Release(ctx)
						}
						return
					}
					if err == nil && !ok {
						err = errors.New("acquire (Wait) returned false")
					}
					wait := time.Since(t0)
					w.record(wait, err)
					if err != nil {
						sleep(runCtx, 10*time.Millisecond)
						continue
					}
					w.recordGrant(longWait{Wait: wait, Began: t0.Sub(conf.Start), Name: name, Coord: coord})
					time.Sleep(conf.Hold)
					if err := l.Release(ctx); err != nil {
						w.record(0, fmt.Errorf("release: %w", err))
					}
				}
			}()
		}
	}
	wg.Wait()
	return w.r, nil
}

func runBaseline(conf childConf) (childResult, error) {
	ctx := context.Background()
	w := &worker{}
	n := conf.Coords * conf.Goroutines
	cfg, err := pgxpool.ParseConfig(conf.URL)
	if err != nil {
		return w.r, err
	}
	// A connection per holder or waiter, as database/sql's unbounded pool
	// gives a library that holds one for the length of a lock.
	cfg.MaxConns = int32(n)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return w.r, err
	}
	defer pool.Close()
	time.Sleep(time.Until(conf.Start))
	deadline := conf.Start.Add(conf.Duration)
	runCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				key := int64(1_000_000 + rand.N(conf.Names))
				t0 := time.Now()
				conn, err := pool.Acquire(runCtx)
				if err == nil {
					_, err = conn.Exec(runCtx, "SELECT pg_advisory_lock($1)", key)
					if err != nil {
						conn.Release()
					}
				}
				if runCtx.Err() != nil {
					if err == nil {
						conn.Release()
					}
					return
				}
				wait := time.Since(t0)
				w.record(wait, err)
				if err != nil {
					sleep(runCtx, 10*time.Millisecond)
					continue
				}
				w.recordGrant(longWait{Wait: wait, Began: t0.Sub(conf.Start), Name: int(key - 1_000_000), Coord: strconv.Itoa(conf.Proc)})
				time.Sleep(conf.Hold)
				if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key); err != nil {
					w.record(0, fmt.Errorf("unlock: %w", err))
				}
				conn.Release()
			}
		}()
	}
	wg.Wait()
	return w.r, nil
}
