package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Event kinds of the demo's timeline.
const (
	evWaits    = "waits"
	evHolds    = "holds"
	evReleases = "releases"
	evKilled   = "killed"
	evTakeOver = "takes over"
	evLeads    = "leads"
)

// event is one line of the demo's timeline. Agents in a child process send
// theirs as JSON lines.
type event struct {
	// T is the wall clock in unix nanoseconds, which (unlike the monotonic
	// clock) is comparable between the demo's processes.
	T     int64  `json:"t"`
	Agent string `json:"agent"`
	Kind  string `json:"kind"`
	Lock  string `json:"lock,omitempty"`
	Op    string `json:"op,omitempty"`
	Note  string `json:"note,omitempty"`
	// Waited is how long a holds or takes-over event waited for the lock.
	Waited time.Duration `json:"waited,omitempty"`
}

// reorderWindow is how long an event waits before it is printed. Events of
// agent-c travel through a pipe, so they can arrive after a later event of
// an in-process agent (agent-c "releases", then agent-a "holds" the lock it
// freed); holding every event back a little and printing in time order
// keeps cause before effect.
const reorderWindow = 50 * time.Millisecond

// timeline prints events in time order, each as
// "+  123ms  agent-b  waits  volume-vol-1  extend_volume", and keeps them
// for the summary. Tables and headings are printed through printBlock so
// that they never interleave with events.
type timeline struct {
	w io.Writer

	mu      sync.Mutex
	start   time.Time
	pending []event
	printed []event

	quit chan struct{}
	done chan struct{}
}

func newTimeline(w io.Writer) *timeline {
	t := &timeline{w: w, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{})}
	go t.loop()
	return t
}

// resetClock makes now the +0ms of the timeline.
func (t *timeline) resetClock() {
	t.mu.Lock()
	t.start = time.Now()
	t.mu.Unlock()
}

// add queues ev for printing.
func (t *timeline) add(ev event) {
	t.mu.Lock()
	t.pending = append(t.pending, ev)
	t.mu.Unlock()
}

func (t *timeline) loop() {
	defer close(t.done)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.quit:
			return
		case now := <-tick.C:
			t.mu.Lock()
			t.printUntil(now.Add(-reorderWindow).UnixNano())
			t.mu.Unlock()
		}
	}
}

// close prints what is pending and stops the printer.
func (t *timeline) close() {
	close(t.quit)
	<-t.done
	t.printBlock(nil)
}

// printBlock prints every pending event, then runs f (which may be nil)
// with the output, with no event printed in between. Callers make sure
// every event that happened before has been added. f must not call the
// timeline's methods: it runs with mu held.
func (t *timeline) printBlock(f func(w io.Writer)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.printUntil(1<<63 - 1)
	if f != nil {
		f(t.w)
	}
}

// printUntil prints the pending events up to cutoff, in time order; called
// with mu held.
func (t *timeline) printUntil(cutoff int64) {
	slices.SortStableFunc(t.pending, func(a, b event) int { return cmp.Compare(a.T, b.T) })
	n := 0
	for n < len(t.pending) && t.pending[n].T <= cutoff {
		fmt.Fprintln(t.w, t.format(t.pending[n]))
		n++
	}
	t.printed = append(t.printed, t.pending[:n]...)
	t.pending = slices.Delete(t.pending, 0, n)
}

func (t *timeline) format(ev event) string {
	line := fmt.Sprintf("%s  %-7s  %-10s  %-12s  %-15s  %s",
		t.stamp(ev.T), ev.Agent, ev.Kind, ev.Lock, ev.Op, ev.Note)
	return strings.TrimRight(line, " ")
}

// stamp is the "+  123ms" of unix-nanosecond time ts; called with mu held.
func (t *timeline) stamp(ts int64) string {
	return fmt.Sprintf("+%5dms", time.Duration(ts-t.start.UnixNano()).Milliseconds())
}

// stampOf is stamp for callers without mu.
func (t *timeline) stampOf(at time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("+%dms", at.Sub(t.start).Milliseconds())
}

// events returns the events printed so far.
func (t *timeline) events() []event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.printed)
}
