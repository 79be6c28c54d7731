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
	want := slices.Clone(metricNames)
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
