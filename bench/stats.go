package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// sample is what one scenario measured in one round.
type sample struct {
	// ops counts the completed operations: cycles for loops, handoffs for
	// handoff rows, trials for takeover rows.
	ops int
	// elapsed is the wall time the ops took, from the start barrier to the
	// last worker's end.
	elapsed time.Duration
	// lat holds one latency per op.
	lat []time.Duration
}

// rate is the throughput in ops per second.
func (s sample) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// percentile returns the p-th percentile (0 < p <= 100) of the latencies by
// the nearest-rank method, which never invents a value that was not measured.
func (s sample) percentile(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	sorted := slices.Clone(s.lat)
	slices.Sort(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// median of xs; NaN when xs is empty. An even count averages the middle two.
func median[T cmp.Ordered](xs []T, toFloat func(T) float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	n := len(sorted)
	if n%2 == 1 {
		return toFloat(sorted[n/2])
	}
	return (toFloat(sorted[n/2-1]) + toFloat(sorted[n/2])) / 2
}

func medianFloat(xs []float64) float64 { return median(xs, func(x float64) float64 { return x }) }

func medianDuration(xs []time.Duration) time.Duration {
	m := median(xs, func(d time.Duration) float64 { return float64(d) })
	if math.IsNaN(m) {
		return 0
	}
	return time.Duration(m)
}

// formatRate prints ops/s with thousands separators: 12,345.
func formatRate(r float64) string {
	if math.IsNaN(r) {
		return "—"
	}
	if r < 10 {
		return fmt.Sprintf("%.1f", r)
	}
	s := fmt.Sprintf("%.0f", r)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatLatency prints a latency with three significant digits in the unit
// that suits it.
func formatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// formatRatio prints a ratio to its floor, or a dash when there is none.
func formatRatio(r float64) string {
	if math.IsNaN(r) {
		return "—"
	}
	if r < 0.1 {
		return fmt.Sprintf("%.3f", r)
	}
	return fmt.Sprintf("%.2f", r)
}
