package main

import (
	"context"
	"crypto/md5"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The tooz-style rows are a BASELINE written here, not tooz itself: they do
// what tooz's PostgreSQL driver (tooz/drivers/pgsql.py, PostgresLock) does
// for Cinder today, in Go, so the cost of its design shows next to the
// others on the same server:
//
//   - a lock's key is the first two bytes of the MD5 of its name, passed as
//     the two-int advisory key (0..255, 0..255): 65,536 keys in all;
//   - every lock has its own connection, opened by acquire and closed by
//     release (and by a NoWait acquire that found the lock busy);
//   - acquire(blocking=True) waits on the server in pg_advisory_lock;
//     acquire with a timeout polls pg_try_advisory_lock, sleeping between
//     tries as tenacity's wait_exponential(max=1) does.
//
// psycopg2 sends an implicit BEGIN before the first statement of a
// connection, one more round trip that this baseline leaves out, so it
// flatters tooz if anything.

// toozWaitCap is the cap of tooz's retry wait (_retry.py:
// wait_exponential(max=1)).
const toozWaitCap = time.Second

// toozWait is how long tooz sleeps after the n-th failed try (n >= 1):
// tenacity's wait_exponential with its default multiplier of 1 s and base
// 2 waits min(2^(n-1) s, max), so with max=1 it is one second every time:
// the "exponential" backoff is capped before it starts.
func toozWait(n int) time.Duration {
	return min(time.Second<<min(n-1, 30), toozWaitCap)
}

// toozKey is tooz's key for name: md5(name)[0:2] as two ints.
func toozKey(name string) [2]int32 {
	sum := md5.Sum([]byte(name))
	return [2]int32{int32(sum[0]), int32(sum[1])}
}

// toozLock is one tooz-style lock: a name, its key and, while acquired,
// its own connection.
type toozLock struct {
	url  string
	key  [2]int32
	conn *pgx.Conn
	// timeout, when > 0, makes acquire poll like tooz's acquire(blocking=N);
	// when 0, acquire blocks on the server like acquire(blocking=True).
	timeout time.Duration
}

func newToozLock(url, name string, timeout time.Duration) *toozLock {
	return &toozLock{url: url, key: toozKey(name), timeout: timeout}
}

// connect opens the lock's connection. psycopg2 speaks the simple query
// protocol (parameters interpolated on the client), so this does too: no
// statement preparation on a connection that lives for one lock.
func (t *toozLock) connect(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(t.url)
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	t.conn, err = pgx.ConnectConfig(ctx, cfg)
	return err
}

// close drops the connection, as tooz's release does.
func (t *toozLock) close() {
	if t.conn != nil {
		_ = t.conn.Close(context.Background())
		t.conn = nil
	}
}

// try is one pg_try_advisory_lock on the lock's connection.
func (t *toozLock) try(ctx context.Context) (bool, error) {
	var ok bool
	err := t.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, t.key[0], t.key[1]).Scan(&ok)
	return ok, err
}

// tryOnce is acquire(blocking=False): connect, try, and close again if busy.
func (t *toozLock) tryOnce(ctx context.Context) (bool, error) {
	if err := t.connect(ctx); err != nil {
		return false, err
	}
	ok, err := t.try(ctx)
	if err != nil || !ok {
		t.close()
	}
	return ok, err
}

// acquire blocks until the lock is held: on the server when timeout is 0,
// else by polling with tooz's waits until timeout has passed.
func (t *toozLock) acquire(ctx context.Context) error {
	if err := t.connect(ctx); err != nil {
		return err
	}
	if t.timeout == 0 {
		if _, err := t.conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, t.key[0], t.key[1]); err != nil {
			t.close()
			return err
		}
		return nil
	}
	giveUp := time.Now().Add(t.timeout)
	for n := 1; ; n++ {
		ok, err := t.try(ctx)
		if err != nil {
			t.close()
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(giveUp) {
			t.close()
			return errors.New("tooz-style lock: timed out")
		}
		select {
		case <-time.After(toozWait(n)):
		case <-ctx.Done():
			t.close()
			return ctx.Err()
		}
	}
}

// release unlocks and closes the lock's connection, as tooz does.
func (t *toozLock) release(ctx context.Context) error {
	defer t.close()
	var ok bool
	if err := t.conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1, $2)`, t.key[0], t.key[1]).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errNotHeld
	}
	return nil
}

// toozUncontended is acquire(blocking=False) and release in a loop: a
// connection set up and torn down per cycle.
func toozUncontended(ctx context.Context, b *bench) (sample, error) {
	t := newToozLock(b.url, "tooz-uncontended", 0)
	return loop(ctx, b.duration, func(ctx context.Context) error {
		ok, err := t.tryOnce(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errBusy
		}
		return t.release(ctx)
	})
}

// toozHandoff has two goroutines, each with its own lock object (as two
// Cinder workers have), take turns on one name. timeout 0 waits on the
// server (blocking=True); timeout > 0 polls (blocking=timeout).
func toozHandoff(timeout time.Duration, d func(*bench) time.Duration) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		name := "tooz-handoff"
		return handoff(ctx, d(b), newToozLock(b.url, name, timeout), newToozLock(b.url, name, timeout))
	}
}
