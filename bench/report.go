package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/version"
)

// machine describes where and with what the figures were taken.
type machine struct {
	cpus     int
	cpuModel string
	postgres string
	peers    []string
	modules  []string
}

// describeMachine gathers the header's facts.
func describeMachine(ctx context.Context, b *bench) (machine, error) {
	m := machine{cpus: runtime.NumCPU(), cpuModel: cpuModel()}
	var err error
	if m.postgres, err = serverVersion(ctx, b.url); err != nil {
		return m, err
	}
	if b.etcd != nil || b.etcdNoFsync != nil {
		m.peers = append(m.peers, "etcd "+version.Version+" (embedded, in a child process, data in a temp dir on "+tempFS()+")")
	}
	if b.redis != nil {
		m.peers = append(m.peers, "Redis "+b.redis.version+" (redis-server --save '' --appendonly no)")
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/jackc/pgx/v5", "go.etcd.io/etcd/client/v3", "github.com/redis/go-redis/v9", "github.com/go-redsync/redsync/v4":
				m.modules = append(m.modules, d.Path+" "+d.Version)
			}
		}
	}
	return m, nil
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// tempFS names the file system type of the temp dir, since etcd's fsyncs
// cost what that disk makes them cost ("tmpfs" makes them free).
func tempFS() string {
	dir, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		return "?"
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "?"
	}
	best, fsType := "", "?"
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mount := f[1]
		under := dir == mount || strings.HasPrefix(dir, strings.TrimSuffix(mount, "/")+"/")
		if under && len(mount) > len(best) {
			best, fsType = mount, f[2]
		}
	}
	return fsType
}

// command is how this run was started, for the header. Under `go run` the
// binary sits in a go-build temp dir, whose path helps nobody repeat it.
func command() string {
	args := strings.Join(os.Args[1:], " ")
	if strings.Contains(os.Args[0], "go-build") {
		return strings.TrimSpace("cd bench && go run . " + args)
	}
	return strings.TrimSpace(filepath.Base(os.Args[0]) + " " + args)
}

// row is one line of the table: medians over the rounds.
type row struct {
	rate, ratio float64
	p50, p99    time.Duration
	ops         float64
}

// summarize takes the medians of one row's rounds; floor is its group's
// floor's rounds, or nil when the floor did not run.
func summarize(g group, rounds, floor []sample) row {
	var rates, ratios, ops []float64
	var p50s, p99s []time.Duration
	for i, s := range rounds {
		rates = append(rates, s.rate())
		ops = append(ops, float64(s.ops))
		p50s = append(p50s, s.percentile(50))
		p99s = append(p99s, s.percentile(99))
		if floor == nil {
			continue
		}
		// A ratio within a round cancels most of the machine's drift
		// between rounds; the table shows the median of those ratios.
		if g.latencyOnly() {
			ratios = append(ratios, float64(floor[i].percentile(50))/float64(s.percentile(50)))
		} else {
			ratios = append(ratios, s.rate()/floor[i].rate())
		}
	}
	r := row{ratio: medianFloat(ratios), p50: medianDuration(p50s), p99: medianDuration(p99s), ops: medianFloat(ops)}
	r.rate = medianFloat(rates)
	if g.latencyOnly() {
		r.rate = math.NaN() // trials per second would mostly time process start-up
	}
	return r
}

// printReport writes the header and the markdown table.
func printReport(w io.Writer, m machine, b *bench, rounds int, rows []scenario, results [][]sample) {
	fmt.Fprintf(w, "machine: %d CPUs (nproc), %s, %s/%s\n", m.cpus, m.cpuModel, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "server: %s\n", m.postgres)
	for _, p := range m.peers {
		fmt.Fprintf(w, "peer: %s\n", p)
	}
	fmt.Fprintf(w, "go: %s; %s\n", runtime.Version(), strings.Join(m.modules, ", "))
	fmt.Fprintf(w, "command: %s\n", command())
	fmt.Fprintf(w, "rounds: %d; per round each row runs %s (tooz-style polling handoff: %s), takeover rows %d trials\n\n",
		rounds, b.duration, b.slowDuration, b.trials)

	floors := map[group]int{}
	for i, s := range rows {
		if s.floor {
			floors[s.group] = i
		}
	}
	fmt.Fprintln(w, "| scenario | ops/s | p50 | p99 | ratio to raw floor | ops/round |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for i, s := range rows {
		if i == 0 || rows[i-1].group != s.group {
			fmt.Fprintf(w, "| **%s** | | | | | |\n", s.group.title())
		}
		var floor []sample
		if f, ok := floors[s.group]; ok {
			floor = results[f]
		}
		r := summarize(s.group, results[i], floor)
		name := s.name
		if s.floor {
			name += " — floor"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.0f |\n", name, formatRate(r.rate), formatLatency(r.p50), formatLatency(r.p99), formatRatio(r.ratio), r.ops)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Each figure is the median over the rounds; ratios are taken within each round, then their median is shown.")
	fmt.Fprintln(w, "Ratio: ops/s ÷ the group's raw pgx floor's ops/s (takeover: floor p50 ÷ row p50); above 1 is faster than the floor.")
	fmt.Fprintln(w, "Latency: each cycle (acquire + release) is one op; handoff rows time the acquire that took the lock from the other contender.")
	fmt.Fprintln(w, "tooz-style rows are a baseline written in this benchmark after tooz's PostgreSQL driver, not tooz itself.")
}
