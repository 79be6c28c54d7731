package chaostest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pgcoord/pgcoord/internal/chaos"
)

// Stalls: stretches when this process's goroutines could not run. A
// goroutine asks to wake every stallTick; a wake-up more than stallMin past
// its due means nothing in the process was scheduled for that long (the
// suite runs under -race on two cores shared with the server, the proxy and
// the other processes). A failed run prints the stalls beside its faults,
// so that a late loss signal can be read as the library's or the
// machine's.
const (
	stallTick = 5 * time.Millisecond
	stallMin  = 50 * time.Millisecond
)

// watchStalls reports each stall (from the tick's due time to the late
// wake-up) until ctx ends.
func watchStalls(ctx context.Context, report func(from, to time.Time)) {
	t := time.NewTicker(stallTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now() // the wake-up, not the tick's stamp
			if due := last.Add(stallTick); now.Sub(due) > stallMin {
				report(due, now)
			}
			last = now
		}
	}
}

// stallSummary is one line: per process, how many stalls and the worst.
func stallSummary(stalls []chaos.Stall) string {
	type agg struct {
		n     int
		worst time.Duration
	}
	by := map[string]*agg{}
	for _, s := range stalls {
		a := by[s.Proc]
		if a == nil {
			a = &agg{}
			by[s.Proc] = a
		}
		a.n++
		a.worst = max(a.worst, s.To.Sub(s.From))
	}
	procs := slices.Sorted(maps.Keys(by))
	parts := make([]string, 0, len(procs))
	for _, p := range procs {
		parts = append(parts, fmt.Sprintf("%s=%d(worst %v)", p, by[p].n, by[p].worst.Round(time.Millisecond)))
	}
	return fmt.Sprintf("stalls over %v [%s]", stallMin, strings.Join(parts, " "))
}
