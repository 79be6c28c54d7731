package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

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
