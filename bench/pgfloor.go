package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The raw pgx rows are the floors: what PostgreSQL advisory locks cost with
// nothing on top, on the same server in the same round. Every other row's
// ratio is taken against one of them.

// rawKeyBase keeps the raw rows' keys apart from pgcoord's, which are
// SHA-256 prefixes of names and could, in theory, land anywhere.
const rawKeyBase int64 = 0x7062_6265_6e63_0000 // "pbbenc" + 16 bits of index

// rawKey returns the advisory-lock key of the raw rows' i-th lock.
func rawKey(i int) int64 { return rawKeyBase + int64(i) }

// conn is what the raw rows need of a *pgx.Conn or a *pgxpool.Conn.
type conn interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// tryUnlock is the floor cycle: try, then unlock, two round trips.
func tryUnlock(ctx context.Context, c conn, key int64) error {
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errBusy
	}
	if err := c.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errNotHeld
	}
	return nil
}

// tryUnlockPipelined sends the try and the unlock together in one round
// trip (a pgx batch is pipelined): the least a lock cycle can cost.
func tryUnlockPipelined(ctx context.Context, c conn, key int64) error {
	var locked, unlocked bool
	batch := &pgx.Batch{}
	batch.Queue(`SELECT pg_try_advisory_lock($1)`, key).QueryRow(func(r pgx.Row) error { return r.Scan(&locked) })
	batch.Queue(`SELECT pg_advisory_unlock($1)`, key).QueryRow(func(r pgx.Row) error { return r.Scan(&unlocked) })
	if err := c.SendBatch(ctx, batch).Close(); err != nil {
		return err
	}
	switch {
	case !locked:
		return errBusy
	case !unlocked:
		return errNotHeld
	}
	return nil
}

// rawUncontended loops cycle on one connection.
func rawUncontended(cycle func(context.Context, conn, int64) error) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		c, err := pgx.Connect(ctx, b.url)
		if err != nil {
			return sample{}, err
		}
		defer c.Close(context.Background())
		return loop(ctx, b.duration, func(ctx context.Context) error { return cycle(ctx, c, rawKey(0)) })
	}
}

// rawSelect1 is one round trip that takes no lock: the network and
// protocol floor under everything else.
func rawSelect1(ctx context.Context, b *bench) (sample, error) {
	c, err := pgx.Connect(ctx, b.url)
	if err != nil {
		return sample{}, err
	}
	defer c.Close(context.Background())
	return loop(ctx, b.duration, func(ctx context.Context) error {
		var n int
		return c.QueryRow(ctx, `SELECT 1`).Scan(&n)
	})
}

// rawParallel runs parallelWorkers goroutines, each on its own key, sharing
// rawPoolConns connections: the floor for pgcoord's parallel row, whose
// coordinator also multiplexes many goroutines onto a few sessions.
func rawParallel(cycle func(context.Context, conn, int64) error) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		cfg, err := pgxpool.ParseConfig(b.url)
		if err != nil {
			return sample{}, err
		}
		cfg.MaxConns, cfg.MinConns = rawPoolConns, rawPoolConns
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return sample{}, err
		}
		defer pool.Close()
		return parallel(ctx, b.duration, parallelWorkers, func(i int) op {
			return func(ctx context.Context) error {
				// The lock and unlock must run on one connection: hold it
				// for the cycle. Session locks never go back to the pool
				// held, since the cycle always unlocks.
				return pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error { return cycle(ctx, c, rawKey(1+i)) })
			}
		})
	}
}

// rawBlocker waits on the server with pg_advisory_lock, the way a raw
// client blocks: the floor for handoff and takeover rows.
type rawBlocker struct {
	conn *pgx.Conn
	key  int64
}

func (r rawBlocker) acquire(ctx context.Context) error {
	_, err := r.conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, r.key)
	return err
}

func (r rawBlocker) release(ctx context.Context) error {
	var ok bool
	if err := r.conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, r.key).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errNotHeld
	}
	return nil
}

// rawHandoff has two connections take turns on one key, each blocking in
// pg_advisory_lock while the other holds it.
func rawHandoff(ctx context.Context, b *bench) (sample, error) {
	var lockers [2]locker
	for i := range lockers {
		c, err := pgx.Connect(ctx, b.url)
		if err != nil {
			return sample{}, err
		}
		defer c.Close(context.Background())
		lockers[i] = rawBlocker{conn: c, key: rawKey(100)}
	}
	return handoff(ctx, b.duration, lockers[0], lockers[1])
}

// serverVersion returns PostgreSQL's version string and its durability
// settings, for the header.
func serverVersion(ctx context.Context, url string) (string, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	var version, fsync, syncCommit string
	err = c.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')`).
		Scan(&version, &fsync, &syncCommit)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("PostgreSQL %s (fsync=%s, synchronous_commit=%s)", version, fsync, syncCommit), nil
}
