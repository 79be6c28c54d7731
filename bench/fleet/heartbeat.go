package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/db"
)

// heartbeatMain measures what a fleet's heartbeats do to pgcoord.members:
// members rows updated by the very statement a coordinator's heartbeat sends
// (db.Heartbeat), each once per interval, for a while; then the table's size
// and pg_stat_user_tables' update counts. It runs twice at once, in two
// databases of one server: with the schema as migrated (fillfactor 70 since
// migration 6) and with fillfactor 100 (the table before migration 6).
//
// The members are simulated (rows and their heartbeat statement, on a pool
// of connections), not 500 coordinators of two backends each: the table sees
// the same statements either way.
func heartbeatMain(args []string) error {
	fs := flag.NewFlagSet("heartbeat", flag.ExitOnError)
	members := fs.Int("members", 500, "members beating")
	interval := fs.Duration("interval", pgcoord.DefaultHeartbeatInterval, "heartbeat interval")
	duration := fs.Duration("duration", 5*time.Minute, "how long they beat")
	conns := fs.Int("conns", 10, "connections the beats share, per database")
	_ = fs.Parse(args)

	ctx := context.Background()
	base, cleanup, err := throwawayServer(nil)
	defer cleanup()
	if err != nil {
		return err
	}
	variants := []struct {
		name, db   string
		fillfactor int // 0: as migrated
	}{
		{"as migrated (fillfactor 70, migration 6)", "hb_migrated", 0},
		{"fillfactor 100 (before migration 6)", "hb_ff100", 100},
	}
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	results := make([]hbResult, len(variants))
	var wg sync.WaitGroup
	errs := make([]error, len(variants))
	for i, v := range variants {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+v.db); err != nil {
			return err
		}
		u, err := url.Parse(base)
		if err != nil {
			return err
		}
		u.Path = "/" + v.db
		dbURL := u.String()
		if err := pgcoord.Migrate(ctx, dbURL); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = beat(ctx, dbURL, v.fillfactor, *members, *interval, *duration, *conns)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	fmt.Printf("command: make heartbeat (bench/fleet heartbeat -members %d -interval %v -duration %v)\n", *members, *interval, *duration)
	fmt.Printf("%d members, each updating its row every %v for %v (%d updates each run)\n\n",
		*members, *interval, *duration, results[0].beats)
	fmt.Println("| members table | fillfactor | size before | size after | n_tup_upd | n_tup_hot_upd | HOT share | dead tuples at end |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for i, v := range variants {
		r := results[i]
		fmt.Printf("| %s | %d | %s | %s | %d | %d | %.1f%% | %d |\n", v.name, r.fillfactor,
			kib(r.before), kib(r.after), r.upd, r.hot, 100*float64(r.hot)/float64(max(r.upd, 1)), r.dead)
	}
	return nil
}

// hbResult is one variant's figures.
type hbResult struct {
	fillfactor    int
	before, after int64
	upd, hot      int64
	dead          int64
	beats         int64
}

func kib(n int64) string { return fmt.Sprintf("%d KiB", n/1024) }

// beat registers members rows in dbURL and updates each every interval for
// duration.
func beat(ctx context.Context, dbURL string, fillfactor, members int, interval, duration time.Duration, conns int) (hbResult, error) {
	var r hbResult
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return r, err
	}
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return r, err
	}
	if fillfactor != 0 {
		if _, err := pool.Exec(ctx, fmt.Sprintf("ALTER TABLE pgcoord.members SET (fillfactor = %d)", fillfactor)); err != nil {
			return r, err
		}
	}
	q := db.New()
	host, _ := os.Hostname()
	ids := make([]string, members)
	for i := range ids {
		ids[i] = fmt.Sprintf("fleet-member-%04d", i)
		if err := q.RegisterMember(ctx, pool, db.RegisterMemberParams{
			MemberID: ids[i], AgentID: ids[i], Hostname: host, Pid: int32(os.Getpid()),
			HeartbeatSeconds: interval.Seconds(), SessionTag: "pgcoord:" + ids[i],
			MemberKey: int64(i), Restart: true,
		}); err != nil {
			return r, err
		}
	}
	// Settle: the inserts' statistics and a first autovacuum look.
	time.Sleep(2 * time.Second)
	if err := pool.QueryRow(ctx, `SELECT coalesce((regexp_match(array_to_string(c.reloptions, ','), 'fillfactor=(\d+)'))[1]::int, 100)
		FROM pg_class c WHERE c.oid = 'pgcoord.members'::regclass`).Scan(&r.fillfactor); err != nil {
		return r, err
	}
	var upd0, hot0 int64
	if err := pool.QueryRow(ctx, `SELECT pg_relation_size('pgcoord.members'), n_tup_upd, n_tup_hot_upd
		FROM pg_stat_user_tables WHERE relid = 'pgcoord.members'::regclass`).Scan(&r.before, &upd0, &hot0); err != nil {
		return r, err
	}

	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Members start at random moments, as a fleet's do.
			time.Sleep(rand.N(interval))
			t := time.NewTicker(interval)
			defer t.Stop()
			for time.Now().Before(deadline) {
				if _, err := q.Heartbeat(ctx, pool, id); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				r.beats++
				mu.Unlock()
				<-t.C
			}
		}()
	}
	wg.Wait()
	pool.Close() // backends flush their statistics as they exit
	if firstErr != nil {
		return r, firstErr
	}
	r.beats /= int64(members)
	time.Sleep(2 * time.Second)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return r, err
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT pg_relation_size('pgcoord.members'), n_tup_upd, n_tup_hot_upd, n_dead_tup
		FROM pg_stat_user_tables WHERE relid = 'pgcoord.members'::regclass`).Scan(&r.after, &r.upd, &r.hot, &r.dead); err != nil {
		return r, err
	}
	r.upd -= upd0
	r.hot -= hot0
	return r, nil
}
