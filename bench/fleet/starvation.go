package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord"
)

// starvationMain: goroutines on several coordinators contend for one name
// for a while, each holding it a moment per turn. Everyone must get it, and
// the longest wait should stay within a small multiple of the mean.
func starvationMain(args []string) error {
	fs := flag.NewFlagSet("starvation", flag.ExitOnError)
	coords := fs.Int("coords", 4, "coordinators")
	goroutines := fs.Int("goroutines", 16, "goroutines in all, spread over the coordinators")
	duration := fs.Duration("duration", 10*time.Second, "how long they contend")
	hold := fs.Duration("hold", time.Millisecond, "how long each turn holds the lock")
	sessions := fs.Int("max-sessions", 0, "Config.MaxSessions (0: the default; 2: every wait beyond the budget)")
	_ = fs.Parse(args)

	ctx := context.Background()
	u, cleanup, err := throwawayServer(nil)
	defer cleanup()
	if err != nil {
		return err
	}
	if err := pgcoord.Migrate(ctx, u); err != nil {
		return err
	}
	var cs []*pgcoord.Coordinator
	for i := range *coords {
		c, err := pgcoord.New(pgcoord.Config{ConnString: u, AgentID: fmt.Sprintf("starve-%d", i),
			SkipMigrations: true, MaxSessions: *sessions, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		if err := c.Start(ctx); err != nil {
			return err
		}
		defer c.Stop(ctx)
		cs = append(cs, c)
	}
	deadline := time.Now().Add(*duration)
	var mu sync.Mutex
	var waits []time.Duration
	counts := make([]int, *goroutines)
	var wg sync.WaitGroup
	var firstErr error
	for g := range *goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := cs[g%len(cs)].GetLock("starvation")
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ok, err := l.Acquire(ctx, pgcoord.Wait)
				if err == nil && !ok {
					err = errors.New("acquire (Wait) returned false")
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				w := time.Since(t0)
				time.Sleep(*hold)
				if err := l.Release(ctx); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				waits = append(waits, w)
				counts[g]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	var total time.Duration
	for _, w := range waits {
		total += w
	}
	mean := total / time.Duration(len(waits))
	slices.Sort(waits)
	longest := waits[len(waits)-1]
	fmt.Printf("command: bench/fleet starvation -coords %d -goroutines %d -duration %v -hold %v -max-sessions %d\n",
		*coords, *goroutines, *duration, *hold, *sessions)
	fmt.Printf("turns %d; per goroutine min %d max %d; wait mean %s p99 %s longest %s; longest/mean %.1f (target <= 20)\n",
		len(waits), slices.Min(counts), slices.Max(counts), fmtDur(mean), pct(waits, 99), fmtDur(longest),
		float64(longest)/float64(mean))
	return nil
}
