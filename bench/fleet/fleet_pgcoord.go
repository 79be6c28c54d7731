package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord"
)

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
