// Package chaos journals the critical sections of a chaos test of pgcoord
// and checks them for mutual exclusion and fencing-token order.
//
// A Section is one hold of one lock, from the moment Acquire said it was
// held (Enter) to the moment the holder stopped relying on it (Exit): by
// choice, before Release, or because Lost() closed (then Exit == Told).
// All times must come from one clock; in one process that is time.Now().
package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Section is one critical section.
type Section struct {
	Lock   string
	Token  int64
	Member string
	// Session names the server session the hold lived on ("pid:1234"),
	// so that a fault can name it as a victim; empty when unknown.
	Session string
	Enter   time.Time
	Exit    time.Time
	// Told is when the holder was told its hold was lost (Lost() closed, or
	// Release returned ErrLockLost); zero when it never was.
	Told time.Time
	// Shared marks a shared (read) hold: two shared sections of one lock
	// may overlap, and their tokens may enter in any order; a shared and
	// an exclusive one are held to the rules of two exclusive ones.
	Shared bool
}

// Fault is one injected fault.
type Fault struct {
	Kind string
	At   time.Time
	// Kills says the fault ends server sessions at once (pg_terminate_backend,
	// a reset connection, a server restart): the server frees their locks
	// before any client can know, so the library can only signal the loss
	// after the fact, within its bound. Faults that merely silence a session
	// (black hole, latency) must be signalled before any takeover.
	Kills bool
	// Victims are the sessions (Section.Session) a killing fault ended;
	// All says it ended every session (a server restart, a failover).
	// A killing fault excuses an overlap only for a hold that was its victim.
	Victims []string
	All     bool
	// Member and Until describe a freeze (SIGSTOP until SIGCONT) of one
	// member's process. A frozen holder cannot learn anything until it runs
	// again (that is what fencing tokens are for), so an overlap with its
	// hold is allowed if it was told within the bound of waking up.
	Member string
	Until  time.Time
}

// Journal collects sections and faults from many goroutines.
type Journal struct {
	mu       sync.Mutex
	sections []Section
	faults   []Fault
}

// Record adds a finished section.
func (j *Journal) Record(s Section) {
	j.mu.Lock()
	j.sections = append(j.sections, s)
	j.mu.Unlock()
}

// Fault records a fault of kind that happened at at and hit no session in
// particular (latency, a black hole): it excuses no overlap.
func (j *Journal) Fault(kind string, at time.Time) {
	j.AddFault(Fault{Kind: kind, At: at})
}

// hit reports whether f ended the session of s, or froze its process.
func (f Fault) hit(s Section) bool {
	return f.All || (f.Member != "" && f.Member == s.Member) ||
		(s.Session != "" && slices.Contains(f.Victims, s.Session))
}

// AddFault records f.
func (j *Journal) AddFault(f Fault) {
	j.mu.Lock()
	j.faults = append(j.faults, f)
	j.mu.Unlock()
}

// Sections returns a copy of the sections recorded so far.
func (j *Journal) Sections() []Section {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.sections)
}

// Faults returns a copy of the faults recorded so far.
func (j *Journal) Faults() []Fault {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.faults)
}

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
	// Losses counts sections whose holder was told of a loss.
	Losses int
	// WorstSignal is, per fault kind, the longest time from a fault to a
	// loss signal that followed it within the same hold (best effort: the
	// latest fault before the signal is taken as its cause; a freeze counts
	// from the waking).
	WorstSignal map[string]time.Duration
}

// OK reports whether the run had no violations.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// String is the summary on one line.
func (r Report) String() string { return strings.Join(r.Lines(), " ") }

// Lines is the summary: counts, then the verdict, then signal delays.
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
		fmt.Sprintf("violations=%d excused-overlaps=%d[%s] losses-signalled=%d", len(r.Violations), r.Excused, strings.Join(es, " "), r.Losses),
		fmt.Sprintf("worst-fault-to-signal[%s]", strings.Join(ws, " ")),
	}
}

// maxViolations caps how many violations a Report spells out.
const maxViolations = 20

// Check checks the journal. bound is how long after a session-killing fault
// a holder may learn of its loss, and after waking from a freeze (the
// library promises two heartbeat intervals, and the first look after a
// pause).
//
// The rules, per lock:
//   - (a) two sections overlap only if the one granted first (lower token)
//     was told of its loss before the other entered, or a session-killing
//     fault ended its very session (or froze its process) and it was told
//     within bound of that fault (or of waking);
//   - (b) in enter order, tokens strictly increase.
func (j *Journal) Check(bound time.Duration) Report {
	sections, faults := j.Sections(), j.Faults()
	slices.SortFunc(faults, func(a, b Fault) int { return a.At.Compare(b.At) })
	r := Report{Holds: len(sections), Faults: map[string]int{}, ExcusedBy: map[string]int{}, WorstSignal: map[string]time.Duration{}}
	for _, f := range faults {
		r.Faults[f.Kind]++
	}
	violate := func(format string, args ...any) {
		if len(r.Violations) < maxViolations {
			r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
		} else if len(r.Violations) == maxViolations {
			r.Violations = append(r.Violations, "... (more)")
		}
	}

	byLock := map[string][]Section{}
	for _, s := range sections {
		byLock[s.Lock] = append(byLock[s.Lock], s)
		if !s.Told.IsZero() {
			r.Losses++
			if kind, d, ok := signalDelay(s, faults); ok {
				r.WorstSignal[kind] = max(r.WorstSignal[kind], d)
			}
		}
	}
	names := make([]string, 0, len(byLock))
	for n := range byLock {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		ss := byLock[name]
		slices.SortFunc(ss, func(a, b Section) int {
			return cmp.Or(a.Enter.Compare(b.Enter), cmp.Compare(a.Token, b.Token))
		})
		// (b) tokens in enter order. A lower token entering after a higher
		// one means its holder was granted the lock first but recorded its
		// entry late: allowed only if it was frozen or its session killed
		// in between, and it was told (fencing then rejects it, which is
		// the point of tokens).
		var top Section
		for i, s := range ss {
			if i > 0 && s.Token <= top.Token && !(s.Shared && top.Shared) && (s.Token == top.Token || !lateEntryExcused(s, faults, bound)) {
				violate("token order: %s", pair(top, s))
			}
			if i == 0 || s.Token > top.Token {
				top = s
			}
		}
		// (a) overlaps. Sorted by enter, each section is compared with the
		// later ones that enter before it exits.
		for i := range ss {
			for k := i + 1; k < len(ss) && ss[k].Enter.Before(ss[i].Exit); k++ {
				first, second := ss[i], ss[k]
				if first.Shared && second.Shared {
					continue // readers may overlap
				}
				if second.Token < first.Token {
					first, second = second, first
				}
				kind := excusedBy(first, second, faults, bound)
				switch {
				case !first.Told.IsZero() && !first.Told.After(second.Enter):
					// Told before the takeover: the contract.
				case kind != "":
					r.Excused++
					r.ExcusedBy[kind]++
					if len(r.ExcusedSamples) < 3 {
						r.ExcusedSamples = append(r.ExcusedSamples, pair(first, second))
					}
				default:
					violate("overlap: %s", pair(first, second))
				}
			}
		}
	}
	return r
}

// lateEntryExcused reports whether s, entered after a section with a higher
// token, was held up between its grant and its entry by a fault it was then
// told of within bound: a freeze of its process (woken at most bound before
// it entered) or a session-killing fault.
func lateEntryExcused(s Section, faults []Fault, bound time.Duration) bool {
	if s.Told.IsZero() {
		return false
	}
	for _, f := range faults {
		if f.At.After(s.Enter) || f.At.Before(s.Enter.Add(-bound)) && (f.Until.IsZero() || f.Until.Before(s.Enter.Add(-bound))) {
			continue
		}
		switch {
		case f.Member != "" && f.Member == s.Member && !f.Until.IsZero():
			if s.Told.Sub(f.Until) <= bound {
				return true
			}
		case f.Kills && f.hit(s):
			if s.Told.Sub(f.At) <= bound {
				return true
			}
		}
	}
	return false
}

// signalDelay is how long after the fault that (most likely) cost s its
// hold s was told: the latest fault during the hold that could reach it.
// A freeze counts from the waking, and only for the frozen member.
func signalDelay(s Section, faults []Fault) (string, time.Duration, bool) {
	for i := len(faults) - 1; i >= 0; i-- {
		f := faults[i]
		if f.At.After(s.Told) {
			continue
		}
		if f.At.Before(s.Enter) {
			return "", 0, false
		}
		switch {
		case f.Member == "":
			return f.Kind, s.Told.Sub(f.At), true
		case f.Member == s.Member && !f.Until.IsZero():
			return f.Kind, max(0, s.Told.Sub(f.Until)), true
		}
	}
	return "", 0, false
}

// excusedBy returns the kind of the fault that explains the overlap, or ""
// when none does: a session-killing fault that ended first's session (it
// came before second entered, and first was told within bound of it), or a
// freeze of first's process (first was told within bound of waking).
func excusedBy(first, second Section, faults []Fault, bound time.Duration) string {
	if first.Told.IsZero() {
		return ""
	}
	for _, f := range faults {
		if f.Member != "" && f.Member == first.Member && !f.Until.IsZero() &&
			!f.At.After(second.Enter) && !f.At.After(first.Exit) && !f.Until.Before(first.Enter.Add(-bound)) &&
			!first.Told.Before(f.At) && first.Told.Sub(f.Until) <= bound {
			// Frozen while holding (or between the grant and recording
			// its entry), told soon after waking.
			return f.Kind
		}
		if f.Kills && f.hit(first) && !f.At.After(second.Enter) && !f.At.Before(first.Enter.Add(-bound)) &&
			!f.At.After(first.Told) && first.Told.Sub(f.At) <= bound {
			return f.Kind
		}
	}
	return ""
}

func pair(a, b Section) string {
	return fmt.Sprintf("%s then %s", a, b)
}

// String describes a section with times relative to nothing in particular
// but precise enough to compare: clock time to the microsecond.
func (s Section) String() string {
	told := "never told"
	if !s.Told.IsZero() {
		told = "told " + s.Told.Format("15:04:05.000000")
	}
	return fmt.Sprintf("[%s token %d by %s (%s): %s..%s, %s]", s.Lock, s.Token, s.Member, cmp.Or(s.Session, "session ?"),
		s.Enter.Format("15:04:05.000000"), s.Exit.Format("15:04:05.000000"), told)
}
