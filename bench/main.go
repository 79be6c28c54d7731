// Command bench measures pgcoord against its floors (raw pgx on the same
// PostgreSQL) and its peers (etcd's concurrency.Mutex, Redis with redsync,
// and a tooz-style baseline), and prints a markdown table of medians over
// several rounds.
//
// It lives in a module of its own so that etcd and Redis clients never enter
// the library's go.mod. It starts a throwaway PostgreSQL (or uses
// DATABASE_URL), an embedded etcd in a child process and the machine's
// redis-server, all on free loopback ports, and stops them at the end.
//
//	cd bench && go run . -rounds 3 -duration 2s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

const (
	// parallelWorkers is how many goroutines the parallel rows run, each on
	// a name of its own.
	parallelWorkers = 64
	// rawPoolConns is the raw parallel floor's connection count.
	rawPoolConns = 16
	// urlEnv names a server to use instead of a throwaway one, as for the
	// demo and the CLI.
	urlEnv = "DATABASE_URL"
)

// bench is the run's configuration and the servers it started.
type bench struct {
	url string
	// duration is how long each timed row runs per round; slowDuration is
	// for the polling row, which hands off about once a second.
	duration, slowDuration time.Duration
	// trials is the number of takeover trials per row per round.
	trials int

	etcd, etcdNoFsync *etcdServer
	redis             *redisServer
}

func main() {
	if mode := os.Getenv(childModeEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		rounds = flag.Int("rounds", 3, "rounds; each runs every row once, and the table shows the median of the rounds (at least 3 for a median that means something)")
		only   = flag.String("only", "", "run only the rows whose group/name matches this regexp, e.g. 'takeover/' or 'pgcoord|raw pgx' (a row's ratio needs its group's floor)")
		b      bench
	)
	flag.DurationVar(&b.duration, "duration", 2*time.Second, "how long each row runs per round")
	flag.DurationVar(&b.slowDuration, "slow-duration", 5*time.Second, "how long the tooz-style polling handoff row runs per round (its waiter sleeps a second after each failed try, so handoffs are few)")
	flag.IntVar(&b.trials, "trials", 20, "SIGKILL takeover trials per row per round")
	flag.Parse()
	if *rounds < 1 || b.trials < 1 || b.duration <= 0 || b.slowDuration <= 0 || flag.NArg() > 0 {
		flag.Usage()
		return fmt.Errorf("bad arguments")
	}
	filter, err := regexp.Compile(*only)
	if err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	var rows []scenario
	for _, s := range scenarios() {
		if filter.MatchString(s.id()) {
			rows = append(rows, s)
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("-only %q matches no row", *only)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Production durability, unlike pgtemp's test defaults: etcd fsyncs
	// every write, so PostgreSQL should too. Advisory locks write no WAL;
	// pgcoord's fencing-token sequence flushes once every 32 acquires.
	url, cleanup, err := pgtemp.FromEnv(urlEnv, pgtemp.Options{Settings: map[string]string{
		"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
	}})
	defer cleanup()
	if err != nil {
		return err
	}
	b.url = url
	if err := pgcoord.Migrate(ctx, url); err != nil {
		return err
	}
	if err := b.startPeers(ctx, rows); err != nil {
		return err
	}
	defer b.stopPeers()

	m, err := describeMachine(ctx, &b)
	if err != nil {
		return err
	}
	results := make([][]sample, len(rows))
	for r := range *rounds {
		for i, s := range rows {
			smp, err := s.run(ctx, &b)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, s.id(), err)
			}
			results[i] = append(results[i], smp)
			fmt.Fprintf(os.Stderr, "round %d/%d  %-72s %12s ops/s  p50 %-9s p99 %-9s (%d ops)\n", r+1, *rounds, s.id(),
				formatRate(smp.rate()), formatLatency(smp.percentile(50)), formatLatency(smp.percentile(99)), smp.ops)
		}
	}
	printReport(os.Stdout, m, &b, *rounds, rows, results)
	return nil
}

// startPeers starts the servers that the selected rows need.
func (b *bench) startPeers(ctx context.Context, rows []scenario) error {
	need := map[peer]bool{}
	for _, s := range rows {
		need[s.needs] = true
	}
	var err error
	if need[peerEtcd] {
		if b.etcd, err = startEtcd(ctx, "etcd"); err != nil {
			return err
		}
	}
	if need[peerEtcdNoFsync] {
		if b.etcdNoFsync, err = startEtcd(ctx, "etcd-nofsync"); err != nil {
			return err
		}
	}
	if need[peerRedis] {
		if b.redis, err = startRedis(ctx); err != nil {
			return err
		}
	}
	return nil
}

// stopPeers stops whatever startPeers started, even after a partial start.
func (b *bench) stopPeers() {
	for _, s := range []*etcdServer{b.etcd, b.etcdNoFsync} {
		if s != nil {
			s.close()
		}
	}
	if b.redis != nil {
		b.redis.close()
	}
}
