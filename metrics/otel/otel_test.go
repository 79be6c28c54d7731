package pgcoordotel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
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
	want := slices.Clone(instrumentNames)
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
