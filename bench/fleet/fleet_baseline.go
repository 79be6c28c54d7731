package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

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
