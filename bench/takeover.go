package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord"
)

// A takeover trial: a child process takes a lock and says so, a waiter in
// this process blocks on the same lock, and once the server shows the
// waiter queued we SIGKILL the child. The figure is the time from the kill
// to the waiter's acquire returning: the kernel closes the dead child's
// sockets, its backends see EOF and exit, their locks go to the waiter.
//
// A pgcoord holder has several sessions (control, registry, lock sessions),
// the raw holder one: all of its backends exit at once, and on a small
// machine the lock's backend may be scheduled after the others. That, not
// the waiter, explains most of the gap between the two rows: a raw holder
// given six more idle connections measured about as slow as pgcoord's.

// takeoverTimeout bounds one trial's wait for the lock after the kill.
const takeoverTimeout = 30 * time.Second

// holdPgcoord is the pgcoord holder child's main: start a coordinator, take
// the lock without waiting, say ready, and hold until killed.
func holdPgcoord(ctx context.Context, url, name string) error {
	c, err := startCoordinator(ctx, url, nil)
	if err != nil {
		return err
	}
	defer c.Stop(context.Background())
	l := c.GetLock(name)
	ok, err := l.Acquire(ctx, pgcoord.NoWait)
	if err != nil {
		return err
	}
	if !ok {
		return errBusy
	}
	ready(fmt.Sprint(l.Key()))
	return nil
}

// holdRaw is the raw holder child's main: one connection holding the key in
// pg_advisory_lock until killed.
func holdRaw(ctx context.Context, url, keyArg string) error {
	key, err := strconv.ParseInt(keyArg, 10, 64)
	if err != nil {
		return fmt.Errorf("raw holder: key: %w", err)
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return err
	}
	ready(keyArg)
	return nil
}

// takeoverTrials runs b.trials trials with holder children of mode and the
// waiter w on key; arg is the lock name or key the child takes.
func takeoverTrials(ctx context.Context, b *bench, mode, arg string, key int64, w locker) (sample, error) {
	return takeoverTrialsQueued(ctx, b, mode, arg, key, w, queuedOnServer)
}

// queuedCheck reports whether a waiter for key is waiting yet.
type queuedCheck func(ctx context.Context, mon *pgx.Conn, key int64) (bool, error)

// queuedOnServer: a session waits on the server for the bigint advisory key.
func queuedOnServer(ctx context.Context, mon *pgx.Conn, key int64) (bool, error) {
	// pg_locks shows a bigint key as its high and low 32 bits.
	hi, lo := int64(uint64(key)>>32), int64(uint32(key))
	var waiting bool
	err := mon.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted
		  AND classid::bigint = $1 AND objid::bigint = $2)`, hi, lo).Scan(&waiting)
	return waiting, err
}

// queuedBeyondBudget: a wait beyond the session budget holds key's wait
// marker (a shared two-int advisory lock on the key's halves).
func queuedBeyondBudget(ctx context.Context, mon *pgx.Conn, key int64) (bool, error) {
	hi, lo := int64(uint64(key)>>32), int64(uint32(key))
	var waiting bool
	err := mon.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND mode = 'ShareLock'
		  AND classid::bigint = $1 AND objid::bigint = $2)`, hi, lo).Scan(&waiting)
	return waiting, err
}

// takeoverTrialsQueued is takeoverTrials with queued telling when the
// waiter waits.
func takeoverTrialsQueued(ctx context.Context, b *bench, mode, arg string, key int64, w locker, queued queuedCheck) (sample, error) {
	mon, err := pgx.Connect(ctx, b.url)
	if err != nil {
		return sample{}, err
	}
	defer mon.Close(context.Background())

	var s sample
	began := time.Now()
	for range b.trials {
		lat, err := takeoverTrial(ctx, b.url, mon, mode, arg, key, w, queued)
		if err != nil {
			return sample{}, err
		}
		s.lat = append(s.lat, lat)
	}
	s.ops, s.elapsed = len(s.lat), time.Since(began)
	return s, nil
}

// takeoverTrial runs one trial and returns the time from kill to acquire.
func takeoverTrial(ctx context.Context, url string, mon *pgx.Conn, mode, arg string, key int64, w locker, queued queuedCheck) (time.Duration, error) {
	holder, _, err := startChild(ctx, mode, childArgEnv+"="+url, childLockEnv+"="+arg)
	if err != nil {
		return 0, err
	}
	defer holder.kill()

	ctx, cancel := context.WithTimeout(ctx, takeoverTimeout)
	defer cancel()
	acquired := make(chan error, 1)
	var at time.Time
	go func() {
		err := w.acquire(ctx)
		at = time.Now()
		acquired <- err
	}()
	if err := waitQueued(ctx, mon, key, acquired, queued); err != nil {
		return 0, err
	}
	killed := time.Now()
	holder.kill()
	if err := <-acquired; err != nil {
		return 0, fmt.Errorf("waiter after the kill: %w", err)
	}
	took := at.Sub(killed)
	return took, w.release(ctx)
}

// waitQueued polls pg_locks until queued says the waiter waits, so the kill
// lands on a waiter that is already queued.
func waitQueued(ctx context.Context, mon *pgx.Conn, key int64, acquired <-chan error, queued queuedCheck) error {
	for {
		waiting, err := queued(ctx, mon, key)
		if err != nil {
			return err
		}
		if waiting {
			return nil
		}
		select {
		case err := <-acquired:
			if err == nil {
				err = errors.New("took the lock while the holder was alive")
			}
			return fmt.Errorf("waiter: %w", err)
		case <-time.After(time.Millisecond):
		}
	}
}

// pgcoordTakeover: pgcoord holder child, pgcoord waiter (Acquire(Wait)).
func pgcoordTakeover(ctx context.Context, b *bench) (sample, error) {
	c, err := startCoordinator(ctx, b.url, nil)
	if err != nil {
		return sample{}, err
	}
	defer c.Stop(context.Background())
	const name = "takeover"
	l := c.GetLock(name)
	return takeoverTrials(ctx, b, "pgcoord-holder", name, l.Key(), pgcoordWaiter{l})
}

// pgcoordFarTakeover: pgcoord holder child, pgcoord waiter with no wait
// session (MaxSessions 2): nothing tells it of the kill but the dead-holder
// check (every 100 ms).
func pgcoordFarTakeover(ctx context.Context, b *bench) (sample, error) {
	c, err := startCoordinator(ctx, b.url, beyondBudget)
	if err != nil {
		return sample{}, err
	}
	defer c.Stop(context.Background())
	const name = "takeover-far"
	l := c.GetLock(name)
	return takeoverTrialsQueued(ctx, b, "pgcoord-holder", name, l.Key(), pgcoordWaiter{l}, queuedBeyondBudget)
}

// pgcoordWaiterRawHolder: raw holder child (one backend to exit), pgcoord
// waiter: separates the waiter's part of a takeover from the holder's.
func pgcoordWaiterRawHolder(ctx context.Context, b *bench) (sample, error) {
	c, err := startCoordinator(ctx, b.url, nil)
	if err != nil {
		return sample{}, err
	}
	defer c.Stop(context.Background())
	l := c.GetLock("takeover-raw-holder")
	return takeoverTrials(ctx, b, "raw-holder", fmt.Sprint(l.Key()), l.Key(), pgcoordWaiter{l})
}

// rawTakeover: raw holder child, raw waiter blocked in pg_advisory_lock.
func rawTakeover(ctx context.Context, b *bench) (sample, error) {
	c, err := pgx.Connect(ctx, b.url)
	if err != nil {
		return sample{}, err
	}
	defer c.Close(context.Background())
	key := rawKey(200)
	return takeoverTrials(ctx, b, "raw-holder", fmt.Sprint(key), key, rawBlocker{conn: c, key: key})
}
