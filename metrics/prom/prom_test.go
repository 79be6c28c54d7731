package pgcoordprom

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

var testURL string

func TestMain(m *testing.M) {
	url, cleanup, err := pgtemp.FromEnv("PGCOORD_TEST_DATABASE_URL", pgtemp.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the Prometheus collector's tests need PostgreSQL:", err)
		os.Exit(1)
	}
	testURL = url
	code := m.Run()
	cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func start(t *testing.T, prefix string) *pgcoord.Coordinator {
	t.Helper()
	c, err := pgcoord.New(pgcoord.Config{ConnString: testURL, Prefix: prefix,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

// The collector exports what the coordinator did: a hold, a busy try, a
// wait that timed out, sessions and the heartbeat.
func TestCollector(t *testing.T) {
	prefix := fmt.Sprintf("prom-%d/", time.Now().UnixNano())
	c, other := start(t, prefix), start(t, prefix)
	l := c.GetLock("held")
	ok, err := l.Acquire(context.Background(), pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = other.GetLock("held").Acquire(context.Background(), pgcoord.NoWait)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = other.GetLock("held").Acquire(context.Background(), pgcoord.Timeout(30*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(New(c, WithConstLabels(prometheus.Labels{"coordinator": "c"})),
		New(other, WithConstLabels(prometheus.Labels{"coordinator": "other"})))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP pgcoord_locks_held Locks held now.
# TYPE pgcoord_locks_held gauge
pgcoord_locks_held{coordinator="c"} 1
pgcoord_locks_held{coordinator="other"} 0
# HELP pgcoord_acquires_busy_total Acquisitions that gave up: busy under NoWait, or still busy when their Timeout ran out.
# TYPE pgcoord_acquires_busy_total counter
pgcoord_acquires_busy_total{coordinator="c"} 0
pgcoord_acquires_busy_total{coordinator="other"} 2
# HELP pgcoord_active 1 while the coordinator is started and its database answers (IsActive), else 0.
# TYPE pgcoord_active gauge
pgcoord_active{coordinator="c"} 1
pgcoord_active{coordinator="other"} 1
`), LocksHeld, AcquiresBusy, Active))

	families, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
		if f.GetName() == WaitDuration {
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				if m.GetLabel()[0].GetValue() == "other" {
					require.EqualValues(t, 1, h.GetSampleCount(), "the timed-out wait")
					require.GreaterOrEqual(t, h.GetSampleSum(), 0.03)
					require.Len(t, h.GetBucket(), len(pgcoord.WaitBucketBounds()))
				}
			}
		}
		if f.GetName() == Sessions {
			require.GreaterOrEqual(t, f.GetMetric()[0].GetGauge().GetValue(), 2.0)
		}
	}
	slices.Sort(names)
	// Without elections, semaphores or groups, their metrics have no
	// series (TestCollectorPrimitives exports them).
	want := slices.DeleteFunc(slices.Clone(metricNames), func(n string) bool { return slices.Contains(primitiveMetrics, n) })
	slices.Sort(want)
	require.Equal(t, want, names, "metricNames lists what is exported")
	problems, err := testutil.CollectAndLint(New(c))
	require.NoError(t, err)
	require.Empty(t, problems, "promlint")
}

// The Grafana dashboard queries only metrics the collector exports, and
// shows every one of them.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana/pgcoord-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash), "the dashboard is valid JSON")
	require.NotEmpty(t, dash.Title)
	metric := regexp.MustCompile(`\bpgcoord_[a-z_]+`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			names := metric.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "panel %q: %q queries no pgcoord metric", p.Title, tg.Expr)
			for _, n := range names {
				base := n
				if strings.HasPrefix(n, WaitDuration) {
					base = WaitDuration // _bucket, _sum, _count
				}
				require.Contains(t, metricNames, base, "panel %q queries %s, which the collector does not export", p.Title, n)
				used[base] = true
			}
		}
	}
	for _, n := range metricNames {
		require.True(t, used[n], "no panel shows %s", n)
	}
}

// primitiveMetrics are the metrics with a series per election, semaphore
// or group.
var primitiveMetrics = []string{ElectionLeader, ElectionTermsWon, ElectionTermsEnded, ElectionTermsLost, SemaphoreSlotsHeld, GroupMembers}

// scrape returns reg's series of primitiveMetrics as the text format
// prints them (name{labels} value), one a line, and logs them.
func scrape(t *testing.T, reg *prometheus.Registry, when string) string {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	var b strings.Builder
	for _, f := range families {
		if !slices.Contains(primitiveMetrics, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue()
			if f.GetType().String() == "COUNTER" {
				v = m.GetCounter().GetValue()
			}
			fmt.Fprintf(&b, "%s{%s} %g\n", f.GetName(), strings.Join(labels, ","), v)
		}
	}
	t.Logf("scrape, %s:\n%s", when, b.String())
	return b.String()
}

// requireSeries checks that the scrape has each line of want.
func requireSeries(t *testing.T, got string, want ...string) {
	t.Helper()
	lines := strings.Split(got, "\n")
	for _, w := range want {
		require.Contains(t, lines, w)
	}
}

// The collector exports elections, semaphores and groups per name: a
// leader's gauge is 1 and its term counted, and 0 after Resign or Stop;
// slots held count; a group of two members shows 2, whether this member
// watches it or only joined it (then the scrape reads it).
func TestCollectorPrimitives(t *testing.T) {
	prefix := fmt.Sprintf("promprims-%d/", time.Now().UnixNano())
	a, b := start(t, prefix), start(t, prefix)
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(New(a, WithConstLabels(prometheus.Labels{"coordinator": "a"})),
		New(b, WithConstLabels(prometheus.Labels{"coordinator": "b"})))

	ea, eb := a.Election("primary"), b.Election("primary")
	require.NoError(t, ea.Campaign(ctx, "a"))
	campaign := make(chan error, 1)
	go func() { campaign <- eb.Campaign(ctx, "b") }()
	require.Eventually(t, func() bool { return len(b.Stats().Elections) == 1 }, 5*time.Second, 5*time.Millisecond, "b campaigns")

	slots := []*pgcoord.Semaphore{a.Semaphore("workers", 3), a.Semaphore("workers", 3), b.Semaphore("workers", 3)}
	for _, s := range slots {
		ok, err := s.Acquire(ctx, pgcoord.NoWait)
		require.NoError(t, err)
		require.True(t, ok)
	}

	// a joins "api" only; b joins and watches it.
	require.NoError(t, a.JoinGroup(ctx, "api", nil))
	require.NoError(t, b.JoinGroup(ctx, "api", nil))
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, err := b.WatchGroup(wctx, "api")
	require.NoError(t, err)

	requireSeries(t, scrape(t, reg, "a leads, b campaigns, 2+1 slots held, both in api"),
		`pgcoord_election_leader{coordinator="a",election="primary"} 1`,
		`pgcoord_election_leader{coordinator="b",election="primary"} 0`,
		`pgcoord_election_terms_won_total{coordinator="a",election="primary"} 1`,
		`pgcoord_election_terms_won_total{coordinator="b",election="primary"} 0`,
		`pgcoord_election_terms_ended_total{coordinator="a",election="primary"} 0`,
		`pgcoord_semaphore_slots_held{coordinator="a",semaphore="workers"} 2`,
		`pgcoord_semaphore_slots_held{coordinator="b",semaphore="workers"} 1`,
		`pgcoord_group_members{coordinator="a",group="api"} 2`,
		`pgcoord_group_members{coordinator="b",group="api"} 2`,
	)

	require.NoError(t, ea.Resign(ctx))
	require.NoError(t, <-campaign)
	require.NoError(t, slots[0].Release(ctx))
	requireSeries(t, scrape(t, reg, "a resigned, b leads, a released a slot"),
		`pgcoord_election_leader{coordinator="a",election="primary"} 0`,
		`pgcoord_election_terms_ended_total{coordinator="a",election="primary"} 1`,
		`pgcoord_election_terms_lost_total{coordinator="a",election="primary"} 0`,
		`pgcoord_election_leader{coordinator="b",election="primary"} 1`,
		`pgcoord_election_terms_won_total{coordinator="b",election="primary"} 1`,
		`pgcoord_semaphore_slots_held{coordinator="a",semaphore="workers"} 1`,
	)

	// b stops: its term ends (not lost), its slot is given back, it is in
	// no group, and a's scrape reads api again: one member left.
	require.NoError(t, b.Stop(ctx))
	for range events {
	}
	require.Eventually(t, func() bool { return len(b.Stats().Groups) == 0 }, 5*time.Second, 5*time.Millisecond, "b's watch ended")
	got := scrape(t, reg, "b stopped")
	requireSeries(t, got,
		`pgcoord_election_leader{coordinator="b",election="primary"} 0`,
		`pgcoord_election_terms_ended_total{coordinator="b",election="primary"} 1`,
		`pgcoord_election_terms_lost_total{coordinator="b",election="primary"} 0`,
		`pgcoord_semaphore_slots_held{coordinator="b",semaphore="workers"} 0`,
		`pgcoord_group_members{coordinator="a",group="api"} 1`,
	)
	require.NotContains(t, got, `pgcoord_group_members{coordinator="b"`, "b is in no group and watches none")

	// Every metric the collector names was exported, and promlint is
	// content with them.
	families, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	require.ElementsMatch(t, metricNames, names, "metricNames lists what is exported")
	problems, err := testutil.CollectAndLint(New(a))
	require.NoError(t, err)
	require.Empty(t, problems, "promlint")
}

// docs/metrics.md's table names every metric the collector exports.
func TestMetricsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../../docs/metrics.md")
	require.NoError(t, err)
	for _, n := range metricNames {
		require.Regexp(t, regexp.MustCompile("(?m)^\\| `"+regexp.QuoteMeta(n)+"[`{ ]"), string(raw), "docs/metrics.md has no row for %s", n)
	}
}
