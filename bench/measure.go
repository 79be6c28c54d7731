package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// op is one timed operation, such as an acquire and a release.
type op func(ctx context.Context) error

// loop runs f back to back in one goroutine for d and times every call.
func loop(ctx context.Context, d time.Duration, f op) (sample, error) {
	return parallel(ctx, d, 1, func(int) op { return f })
}

// parallel runs n workers for d, worker i calling newOp(i)'s op back to
// back, and times every call. Each worker calls its op once, untimed,
// before the clock starts, so connection set-up and statement preparation
// stay out of the figures.
func parallel(ctx context.Context, d time.Duration, n int, newOp func(worker int) op) (sample, error) {
	g, ctx := errgroup.WithContext(ctx)
	var warm sync.WaitGroup
	warm.Add(n)
	start := make(chan struct{})
	var deadline time.Time // written before start is closed, read after
	lats := make([][]time.Duration, n)
	for i := range n {
		f := newOp(i)
		g.Go(func() error {
			err := f(ctx)
			warm.Done()
			if err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
			select {
			case <-start:
			case <-ctx.Done():
				return ctx.Err()
			}
			var lat []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := f(ctx); err != nil {
					return err
				}
				lat = append(lat, time.Since(t0))
			}
			lats[i] = lat
			return nil
		})
	}
	warm.Wait()
	began := time.Now()
	deadline = began.Add(d)
	close(start)
	if err := g.Wait(); err != nil {
		return sample{}, err
	}
	s := sample{elapsed: time.Since(began)}
	for _, l := range lats {
		s.lat = append(s.lat, l...)
	}
	s.ops = len(s.lat)
	return s, nil
}

// locker is one contender's handle on the lock a handoff row passes around.
type locker interface {
	// acquire blocks until the lock is held.
	acquire(ctx context.Context) error
	release(ctx context.Context) error
}

// handoff runs two workers that loop acquire, release on one lock for d,
// each acquire waiting while the other holds it. Only acquisitions that
// change hands count as ops, and their latency is the time spent in acquire:
// a waiter queued on the server gets the lock at the holder's release, but a
// polling waiter sleeps through most releases and the releaser takes the
// lock again, which is no handoff. Handoffs completed after d are dropped.
func handoff(ctx context.Context, d time.Duration, a, b locker) (sample, error) {
	lockers := [2]locker{a, b}
	// Warm up each side alone, so connects and prepares are not timed.
	for _, l := range lockers {
		if err := l.acquire(ctx); err != nil {
			return sample{}, fmt.Errorf("warm-up: %w", err)
		}
		if err := l.release(ctx); err != nil {
			return sample{}, fmt.Errorf("warm-up: %w", err)
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	var holder atomic.Int32
	holder.Store(-1)
	lats := make([][]time.Duration, 2)
	deadline := time.Now().Add(d)
	for i, l := range lockers {
		g.Go(func() error {
			var lat []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := l.acquire(ctx); err != nil {
					return err
				}
				end := time.Now()
				changed := holder.Swap(int32(i)) != int32(i)
				if changed && end.Before(deadline) {
					lat = append(lat, end.Sub(t0))
				}
				if err := l.release(ctx); err != nil {
					return err
				}
			}
			lats[i] = lat
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return sample{}, err
	}
	// The rate is over d exactly: the last waiter may still be polling
	// well past the deadline, and handoffs after it are not counted.
	s := sample{elapsed: d}
	s.lat = append(lats[0], lats[1]...)
	s.ops = len(s.lat)
	return s, nil
}

// errBusy reports a lock that an uncontended row found taken: a bug in
// the benchmark or a leftover holder, never expected.
var errBusy = errors.New("lock unexpectedly busy")

// errNotHeld reports an unlock of a lock the session did not hold.
var errNotHeld = errors.New("unlock: lock was not held")
