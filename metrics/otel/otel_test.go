package pgcoordotel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

var testURL string

func TestMain(m *testing.M) {
	url, cleanup, err := pgtemp.FromEnv("PGCOORD_TEST_DATABASE_URL", pgtemp.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the OpenTelemetry instruments' tests need PostgreSQL:", err)
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

func TestInstruments(t *testing.T) {
	prefix := fmt.Sprintf("otel-%d/", time.Now().UnixNano())
	c, other := start(t, prefix), start(t, prefix)
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	m, err := Register(other, provider.Meter("test"), WithAttributes(attribute.String("coordinator", "other")))
	require.NoError(t, err)

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
	mine := other.GetLock("mine")
	ok, err = mine.Acquire(context.Background(), pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			got[mt.Name] = mt.Data
		}
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	// Without elections, semaphores or groups, their instruments have no
	// points (TestInstrumentsPrimitives observes them).
	want := slices.DeleteFunc(slices.Clone(instrumentNames), func(n string) bool { return slices.Contains(primitiveInstruments, n) })
	slices.Sort(want)
	require.Equal(t, want, names)

	sum := func(name string) int64 {
		dp := got[name].(metricdata.Sum[int64]).DataPoints
		require.Len(t, dp, 1, name)
		v, ok := dp[0].Attributes.Value("coordinator")
		require.True(t, ok)
		require.Equal(t, "other", v.AsString())
		return dp[0].Value
	}
	require.EqualValues(t, 1, sum(LocksHeld))
	require.EqualValues(t, 1, sum(Acquires))
	require.EqualValues(t, 2, sum(AcquiresBusy))
	require.EqualValues(t, 0, sum(LocksLost))
	gauge := got[Active].(metricdata.Gauge[int64]).DataPoints
	require.EqualValues(t, 1, gauge[0].Value)
	require.GreaterOrEqual(t, got[Sessions].(metricdata.Gauge[int64]).DataPoints[0].Value, int64(2))

	hist := got[WaitDuration].(metricdata.Histogram[float64]).DataPoints
	require.Len(t, hist, 1)
	require.EqualValues(t, 1, hist[0].Count, "the timed-out wait")
	require.GreaterOrEqual(t, hist[0].Sum, 0.03)
	require.Len(t, hist[0].Bounds, len(pgcoord.WaitBucketBounds()))

	require.NoError(t, m.Unregister())
	require.NoError(t, mine.Release(context.Background()))
}

// primitiveInstruments are the instruments with a point per election,
// semaphore or group.
var primitiveInstruments = []string{ElectionLeader, ElectionTermsWon, ElectionTermsEnded, ElectionTermsLost, SemaphoreSlotsHeld, GroupMembers}

// collect returns the points of primitiveInstruments as
// "name{attributes} value" lines, and logs them.
func collect(t *testing.T, reader sdkmetric.Reader, when string) []string {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if !slices.Contains(primitiveInstruments, mt.Name) {
				continue
			}
			var points []metricdata.DataPoint[int64]
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				points = d.DataPoints
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			default:
				t.Fatalf("%s: unexpected aggregation %T", mt.Name, d)
			}
			for _, p := range points {
				var attrs []string
				for _, kv := range p.Attributes.ToSlice() {
					attrs = append(attrs, fmt.Sprintf("%s=%q", kv.Key, kv.Value.AsString()))
				}
				lines = append(lines, fmt.Sprintf("%s{%s} %d", mt.Name, strings.Join(attrs, ","), p.Value))
			}
		}
	}
	slices.Sort(lines)
	t.Logf("collected, %s:\n%s", when, strings.Join(lines, "\n"))
	return lines
}

// The instruments observe elections, semaphores and groups per name: a
// leader's gauge is 1 and its term counted, and 0 after Resign or Stop;
// slots held count; a group of two members shows 2, whether this member
// watches it or only joined it (then the collection reads it).
func TestInstrumentsPrimitives(t *testing.T) {
	prefix := fmt.Sprintf("otelprims-%d/", time.Now().UnixNano())
	a, b := start(t, prefix), start(t, prefix)
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	for name, c := range map[string]*pgcoord.Coordinator{"a": a, "b": b} {
		m, err := Register(c, provider.Meter("test"), WithAttributes(attribute.String("coordinator", name)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Unregister() })
	}

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

	got := collect(t, reader, "a leads, b campaigns, 2+1 slots held, both in api")
	require.Subset(t, got, []string{
		`pgcoord.election.leader{coordinator="a",election="primary"} 1`,
		`pgcoord.election.leader{coordinator="b",election="primary"} 0`,
		`pgcoord.election.terms.won{coordinator="a",election="primary"} 1`,
		`pgcoord.election.terms.ended{coordinator="a",election="primary"} 0`,
		`pgcoord.semaphore.slots.held{coordinator="a",semaphore="workers"} 2`,
		`pgcoord.semaphore.slots.held{coordinator="b",semaphore="workers"} 1`,
		`pgcoord.group.members{coordinator="a",group="api"} 2`,
		`pgcoord.group.members{coordinator="b",group="api"} 2`,
	})
	for _, name := range primitiveInstruments {
		require.True(t, slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, name+"{") }), "%s observed", name)
	}

	require.NoError(t, ea.Resign(ctx))
	require.NoError(t, <-campaign)
	require.NoError(t, slots[0].Release(ctx))
	got = collect(t, reader, "a resigned, b leads, a released a slot")
	require.Subset(t, got, []string{
		`pgcoord.election.leader{coordinator="a",election="primary"} 0`,
		`pgcoord.election.terms.ended{coordinator="a",election="primary"} 1`,
		`pgcoord.election.terms.lost{coordinator="a",election="primary"} 0`,
		`pgcoord.election.leader{coordinator="b",election="primary"} 1`,
		`pgcoord.election.terms.won{coordinator="b",election="primary"} 1`,
		`pgcoord.semaphore.slots.held{coordinator="a",semaphore="workers"} 1`,
	})

	require.NoError(t, b.Stop(ctx))
	for range events {
	}
	require.Eventually(t, func() bool { return len(b.Stats().Groups) == 0 }, 5*time.Second, 5*time.Millisecond, "b's watch ended")
	got = collect(t, reader, "b stopped")
	require.Subset(t, got, []string{
		`pgcoord.election.leader{coordinator="b",election="primary"} 0`,
		`pgcoord.election.terms.ended{coordinator="b",election="primary"} 1`,
		`pgcoord.election.terms.lost{coordinator="b",election="primary"} 0`,
		`pgcoord.semaphore.slots.held{coordinator="b",semaphore="workers"} 0`,
		`pgcoord.group.members{coordinator="a",group="api"} 1`,
	})
	for _, l := range got {
		require.False(t, strings.HasPrefix(l, `pgcoord.group.members{coordinator="b"`), "b is in no group and watches none: %s", l)
	}
}

// docs/metrics.md's table names every instrument Register creates.
func TestInstrumentsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../../docs/metrics.md")
	require.NoError(t, err)
	for _, n := range instrumentNames {
		require.Contains(t, string(raw), " | `"+n+"` ", "docs/metrics.md has no row for %s", n)
	}
}
