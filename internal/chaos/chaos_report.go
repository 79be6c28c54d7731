package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of Check.
type Report struct {
	Holds  int
	Faults map[string]int
	// Violations are overlaps the contract does not allow and token
	// inversions; the run fails if there is any.
	Violations []string
	// Excused counts overlaps that followed a session-killing fault that
	// hit the earlier holder's session, or a freeze of its process, where
	// that holder was told within the signalling bound (of the fault, or
	// of waking up); ExcusedBy counts them by the kind of that fault.
	Excused   int
	ExcusedBy map[string]int
	// ExcusedSamples describes the first few excused overlaps.
	ExcusedSamples []string
	// StallExcused counts the excused overlaps whose holder was told
	// within the bound only once the stalls of its process between the
	// fault and the signal are not counted (see Stall); StallSamples
	// describes them, with the delay and the stall.
	StallExcused int
	StallSamples []string
	// Losses counts sections whose holder was told of a loss.
	Losses int
	// WorstSignal is, per fault kind, the longest time from a fault to a
	// loss signal that followed it within the same hold, while the holder
	// still relied on it (best effort: the latest fault before the signal
	// is taken as its cause; a freeze counts from the waking).
	WorstSignal map[string]time.Duration
	// WorstSignalSection is the section behind each WorstSignal, and
	// WorstSignalFault its fault's time: for reading its timeline.
	WorstSignalSection map[string]Section
	WorstSignalFault   map[string]time.Time
	// LateSignals counts holders told past the bound of a fault that hit
	// their own hold (its session killed, its process frozen), while they
	// still relied on it, even with their process's stalls in between not
	// counted; LateSignalsStalled those within the bound only once the
	// stalls are not counted. Neither fails the run by itself (an overlap
	// does, rule (a)); they say whether the signalling bound held.
	// LateSamples describes the first few of both.
	LateSignals        int
	LateSignalsStalled int
	LateSamples        []string
}

// OK reports whether the run had no violations.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// String is the summary on one line.
func (r Report) String() string { return strings.Join(r.Lines(), " ") }

// Lines is the summary: counts, then the verdict, then signal delays
// (the worst per fault kind, and how many were past the bound).
func (r Report) Lines() []string {
	kinds := make([]string, 0, len(r.Faults))
	for k := range r.Faults {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var fs, es, ws []string
	for _, k := range kinds {
		fs = append(fs, fmt.Sprintf("%s=%d", k, r.Faults[k]))
		if n := r.ExcusedBy[k]; n > 0 {
			es = append(es, fmt.Sprintf("%s=%d", k, n))
		}
		if d, ok := r.WorstSignal[k]; ok {
			ws = append(ws, fmt.Sprintf("%s=%v", k, d.Round(time.Millisecond)))
		}
	}
	return []string{
		fmt.Sprintf("holds=%d faults[%s]", r.Holds, strings.Join(fs, " ")),
		fmt.Sprintf("violations=%d excused-overlaps=%d[%s] (within the bound only less stalls: %d) losses-signalled=%d",
			len(r.Violations), r.Excused, strings.Join(es, " "), r.StallExcused, r.Losses),
		fmt.Sprintf("worst-fault-to-signal[%s] past-the-bound-after-own-fault=%d (within it only less stalls: %d)",
			strings.Join(ws, " "), r.LateSignals, r.LateSignalsStalled),
	}
}
