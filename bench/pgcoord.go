package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/pgcoord/pgcoord"
)

// agentSeq makes every coordinator's AgentID unique within the run; the pid
// makes it unique across the child processes too.
var agentSeq atomic.Int64

// startCoordinator starts a coordinator with the defaults a user gets, bar
// what the caller sets in tune. The schema was migrated once by main, so
// Start does not run the migrations again.
func startCoordinator(ctx context.Context, url string, tune func(*pgcoord.Config)) (*pgcoord.Coordinator, error) {
	cfg := pgcoord.Config{
		ConnString:     url,
		AgentID:        fmt.Sprintf("bench-%d-%d", os.Getpid(), agentSeq.Add(1)),
		SkipMigrations: true,
		Logger:         slog.New(slog.DiscardHandler),
	}
	if tune != nil {
		tune(&cfg)
	}
	c, err := pgcoord.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// acquireRelease is one uncontended cycle: Acquire(NoWait), then Release.
func acquireRelease(l *pgcoord.Lock) op {
	return func(ctx context.Context) error {
		ok, err := l.Acquire(ctx, pgcoord.NoWait)
		if err != nil {
			return err
		}
		if !ok {
			return errBusy
		}
		return l.Release(ctx)
	}
}

// asyncRelease tunes a coordinator for Config.AsyncRelease.
func asyncRelease(cfg *pgcoord.Config) { cfg.AsyncRelease = true }

// pgcoordUncontended loops on one name with one goroutine and the default
// configuration, with tune applied to it.
func pgcoordUncontended(tune func(*pgcoord.Config)) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		c, err := startCoordinator(ctx, b.url, tune)
		if err != nil {
			return sample{}, err
		}
		defer c.Stop(context.Background())
		return loop(ctx, b.duration, acquireRelease(c.GetLock("uncontended")))
	}
}

// pgcoordParallel runs parallelWorkers goroutines on distinct names through
// one coordinator with the default configuration (one lock session), with
// tune applied to it.
func pgcoordParallel(tune func(*pgcoord.Config)) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		c, err := startCoordinator(ctx, b.url, tune)
		if err != nil {
			return sample{}, err
		}
		defer c.Stop(context.Background())
		return parallel(ctx, b.duration, parallelWorkers, func(i int) op {
			return acquireRelease(c.GetLock(fmt.Sprintf("parallel-%d", i)))
		})
	}
}

// pgcoordWaiter is one contender of a handoff: Acquire(Wait), Release.
type pgcoordWaiter struct{ l *pgcoord.Lock }

func (w pgcoordWaiter) acquire(ctx context.Context) error {
	ok, err := w.l.Acquire(ctx, pgcoord.Wait)
	if err == nil && !ok {
		err = errBusy // Wait only returns false with an error
	}
	return err
}

func (w pgcoordWaiter) release(ctx context.Context) error { return w.l.Release(ctx) }

// beyondBudget leaves a coordinator no wait session: every wait is beyond
// the session budget (woken by NOTIFY or the dead-holder check).
func beyondBudget(cfg *pgcoord.Config) { cfg.MaxSessions = 2 }

// pgcoordHandoff has two coordinators take turns on one name, with tune
// applied to their configs.
func pgcoordHandoff(tune func(*pgcoord.Config)) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		var lockers [2]locker
		for i := range lockers {
			c, err := startCoordinator(ctx, b.url, tune)
			if err != nil {
				return sample{}, err
			}
			defer c.Stop(context.Background())
			lockers[i] = pgcoordWaiter{c.GetLock("handoff")}
		}
		return handoff(ctx, b.duration, lockers[0], lockers[1])
	}
}
