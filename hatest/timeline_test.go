package hatest

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A timeline's lines from the watcher and a coordinator's log: HAProxy's
// view in force when the window opens, then its changes and the records
// within the window, none after it. Runs without a stack.
func TestTimelineEvents(t *testing.T) {
	t0 := time.Now()
	w := &watcher{proxy: []proxyView{
		{at: t0.Add(-5 * time.Second), view: "node1 UP, node2 DOWN"},
		{at: t0.Add(time.Second), view: "node1 DOWN, node2 DOWN"},
		{at: t0.Add(3 * time.Second), view: "node1 DOWN, node2 UP"},
		{at: t0.Add(100 * time.Second), view: "node1 UP, node2 DOWN"},
	}}
	var log logRecorder
	log.note(t0.Add(2*time.Second), "acquire refused", slog.String("err", "unexpected EOF"))
	log.note(t0.Add(20*time.Second), "acquired")
	evs := append(w.events(t0.Add(-time.Second), t0.Add(10*time.Second)), log.events(t0.Add(-time.Second), t0.Add(10*time.Second))...)
	slices.SortStableFunc(evs, func(a, b event) int { return a.at.Compare(b.at) })
	var lines []string
	for _, e := range evs {
		lines = append(lines, ms(e.at.Sub(t0))+" "+e.what)
	}
	require.Equal(t, []string{
		"-5.000s haproxy: node1 UP, node2 DOWN (in force at the start)",
		"+1.000s haproxy: node1 DOWN, node2 DOWN",
		"+2.000s log: test: acquire refused err=unexpected EOF",
		"+3.000s haproxy: node1 DOWN, node2 UP",
	}, lines)
}
