package pgcoord

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/db"
)

// Benchmarks compare pgcoord with raw pgx on the same server in the same
// run: ratios, not absolute numbers, are what carry between machines.

// BenchmarkRawTryUnlock is the floor for one uncontended cycle: raw pgx
// pg_try_advisory_lock then pg_advisory_unlock, two round trips.
func BenchmarkRawTryUnlock(b *testing.B) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	key := int64(0x5eed)
	b.ReportAllocs()
	for b.Loop() {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
			b.Fatal(ok, err)
		}
		if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkAcquireRelease is one uncontended Acquire(NoWait)+Release.
func BenchmarkAcquireRelease(b *testing.B) {
	c := newCoord(b, testPrefix(b))
	l := c.GetLock("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := l.Acquire(ctx, NoWait); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAcquireReleaseParallel is 64 goroutines on distinct names through
// one coordinator with the default configuration (one lock session).
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	c := newCoord(b, testPrefix(b))
	ctx := context.Background()
	// Each name is registered (its first Acquire writes the registry) before
	// the timer starts, as the raw floor's pool is dialled before its timer:
	// the figure is the steady cycle, not the first one.
	const perProc = 32 // 2 cores x 32 = 64 goroutines
	locks := make([]*Lock, perProc*runtime.GOMAXPROCS(0))
	for i := range locks {
		locks[i] = c.GetLock(fmt.Sprintf("p%d", i))
		if ok, err := locks[i].Acquire(ctx, NoWait); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if err := locks[i].Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	var seq atomic.Int64
	b.SetParallelism(perProc)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		l := locks[seq.Add(1)-1] // RunParallel starts exactly len(locks) goroutines
		for pb.Next() {
			if ok, err := l.Acquire(ctx, NoWait); !ok || err != nil {
				b.Fatal(ok, err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSynchronized is the whole wrapper: format, acquire, run, release.
func BenchmarkSynchronized(b *testing.B) {
	c := newCoord(b, testPrefix(b))
	ctx := context.Background()
	data := map[string]any{"vol": volume{ID: "v1"}}
	fn := func(context.Context) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if err := Synchronized(ctx, "{f_name}-{vol.id}", data, fn, WithCoordinator(c)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkContended has two coordinators take turns on one lock, each
// waiting on the server (Wait) while the other holds it; b.N counts the
// acquisitions of both.
func BenchmarkContended(b *testing.B) {
	benchContended(b)
}

// BenchmarkContendedBeyondBudget is BenchmarkContended with every wait
// beyond the session budget (MaxSessions 2): woken by NOTIFY, then a try.
func BenchmarkContendedBeyondBudget(b *testing.B) {
	benchContended(b, func(cfg *Config) { cfg.MaxSessions = 2 })
}

func benchContended(b *testing.B, tune ...func(*Config)) {
	p := testPrefix(b)
	locks := []*Lock{newCoord(b, p, tune...).GetLock("contended"), newCoord(b, p, tune...).GetLock("contended")}
	ctx := context.Background()
	// handoffs has the two coordinators take turns n times in all.
	handoffs := func(n int) error {
		var left atomic.Int64
		left.Store(int64(n))
		errs := make(chan error, len(locks))
		for _, l := range locks {
			go func() {
				for left.Add(-1) >= 0 {
					if ok, err := l.Acquire(ctx, Wait); !ok || err != nil {
						errs <- fmt.Errorf("acquire: %v %w", ok, err)
						return
					}
					if err := l.Release(ctx); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		var first error
		for range locks {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	// A few turns before the timer: each coordinator's wait session is
	// dialled and the name registered on first use, as RawHandoff's two
	// connections are dialled before its timer.
	if err := handoffs(50); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := handoffs(b.N); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRawTryUnlockParallel is the floor for many goroutines: raw pgx
// try+unlock pairs from 64 goroutines over 16 pooled connections.
func BenchmarkRawTryUnlockParallel(b *testing.B) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(testURL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	// Dial all 16 connections before the timer: pgcoord's benchmark opens its
	// sessions in newCoord, outside its timer, so the floor must too.
	conns := make([]*pgxpool.Conn, cfg.MaxConns)
	for i := range conns {
		if conns[i], err = pool.Acquire(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, conn := range conns {
		conn.Release()
	}
	var seq atomic.Int64
	b.SetParallelism(32) // 2 cores x 32 = 64 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := 0x5eed0000 + seq.Add(1)
		for pb.Next() {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			var ok bool
			err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok)
			if err == nil {
				err = conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok)
			}
			conn.Release()
			if err != nil || !ok {
				b.Error(ok, err)
				return
			}
		}
	})
}

// BenchmarkHoldMany measures Acquire(NoWait)+Release of one more lock while
// the coordinator already holds many on its lock session: the cost per
// acquire should not grow with the count. It also reports the Go heap each
// held lock costs (Lock object and hold together), as heapB/held.
func BenchmarkHoldMany(b *testing.B) {
	for _, n := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("held=%d", n), func(b *testing.B) {
			c := newCoord(b, testPrefix(b), func(cfg *Config) {
				cfg.MaxHeldLocks = n + 10
			})
			ctx := context.Background()
			held := make([]*Lock, 0, n)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range n {
				l := c.GetLock(fmt.Sprintf("held-%d", i))
				if ok, err := l.Acquire(ctx, NoWait); !ok || err != nil {
					b.Fatal(i, ok, err)
				}
				held = append(held, l)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			l := c.GetLock("extra")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if ok, err := l.Acquire(ctx, NoWait); !ok || err != nil {
					b.Fatal(ok, err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if n > 0 {
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heapB/held")
			}
			for _, h := range held {
				if err := h.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawHoldMany is the floor for BenchmarkHoldMany: raw pgx
// try+unlock on one connection that already holds n/4 session locks, as
// each of 4 lock sessions does when a coordinator holds n. (PostgreSQL
// scans a backend's whole local lock table at every transaction end, so
// this floor itself grows with the count.)
func BenchmarkRawHoldMany(b *testing.B) {
	for _, n := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("held=%d", n), func(b *testing.B) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, testURL)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(k) FROM generate_series(1, $1::bigint) k`, n/4); err != nil {
				b.Fatal(err)
			}
			key := int64(-0x5eed)
			b.ReportAllocs()
			for b.Loop() {
				var ok bool
				if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
					b.Fatal(ok, err)
				}
				if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

// BenchmarkRawHandoff is the floor for BenchmarkContended: two raw pgx
// connections taking turns on one key with pg_advisory_lock, which waits
// on the server, and pg_advisory_unlock; b.N counts the acquisitions of
// both.
func BenchmarkRawHandoff(b *testing.B) {
	benchRawHandoff(b, `SELECT pg_advisory_lock($1)`, `SELECT pg_advisory_unlock($1)`)
}

// BenchmarkRawHandoffSQL is BenchmarkRawHandoff with pgcoord's own two
// statements, sent by raw pgx: WaitLock (a one-second wait slice's
// lock_timeout, the wait, the fencing token) and Unlock (the unlock and the
// wait-marker check that says whether a wait beyond the budget needs a
// NOTIFY). It splits the handoff's gap to raw pgx in two:
// RawHandoff/RawHandoffSQL is what pgcoord's SQL costs the server,
// RawHandoffSQL/Contended what its client costs beyond raw pgx's (1.00:
// none). scripts/bench-ratio.sh prints both.
func BenchmarkRawHandoffSQL(b *testing.B) {
	benchRawHandoff(b, db.WaitLock, db.Unlock, int32(waitSlice.Milliseconds()))
}

// benchRawHandoff has two raw pgx connections take turns on one key: lock
// (which waits on the server) with args and then the key, then unlock with
// the key.
func benchRawHandoff(b *testing.B, lock, unlock string, args ...any) {
	ctx := context.Background()
	key := int64(-0x5eed)
	var left atomic.Int64
	left.Store(int64(b.N))
	errs := make(chan error, 2)
	conns := make([]*pgx.Conn, 2)
	for i := range conns {
		conn, err := pgx.Connect(ctx, testURL)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		conns[i] = conn
	}
	lockArgs := append(args, key)
	b.ResetTimer()
	for _, conn := range conns {
		go func() {
			for left.Add(-1) >= 0 {
				if _, err := conn.Exec(ctx, lock, lockArgs...); err != nil {
					errs <- err
					return
				}
				if _, err := conn.Exec(ctx, unlock, key); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAcquireReleaseAsync is BenchmarkAcquireRelease with
// Config.AsyncRelease: each unlock rides with the next try, one round trip
// per cycle.
func BenchmarkAcquireReleaseAsync(b *testing.B) {
	c := newCoord(b, testPrefix(b), func(cfg *Config) { cfg.AsyncRelease = true })
	l := c.GetLock("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := l.Acquire(ctx, NoWait); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
