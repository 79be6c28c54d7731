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
	// Cause is what the holder was told (the loss's error), when it was;
	// printed with a violation, so its timeline shows how the loss was
	// found.
	Cause string
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

// Stall is a stretch when one process of the test could not run its
// goroutines (found by a ticker that woke late): no library code there ran
// either, so a loss signal due in it is late by as much. Check does not
// count a stall of the holder's process against the signalling bound.
type Stall struct {
	Proc     string   // "parent", or a child's member
	Members  []string // the members the process runs
	From, To time.Time
}

// Journal collects sections, faults and stalls from many goroutines.
type Journal struct {
	mu       sync.Mutex
	sections []Section
	faults   []Fault
	stalls   []Stall
}

// Stall records a stall.
func (j *Journal) Stall(s Stall) {
	j.mu.Lock()
	j.stalls = append(j.stalls, s)
	j.mu.Unlock()
}

// Stalls returns a copy of the stalls recorded so far.
func (j *Journal) Stalls() []Stall {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.stalls)
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
		fmt.Sprintf("violations=%d excused-overlaps=%d[%s] (within the bound only less stalls: %d) losses-signalled=%d",
			len(r.Violations), r.Excused, strings.Join(es, " "), r.StallExcused, r.Losses),
		fmt.Sprintf("worst-fault-to-signal[%s]", strings.Join(ws, " ")),
	}
}

// maxViolations caps how many violations a Report spells out.
const maxViolations = 20

// Check checks the journal. bound is how long after a session-killing fault
// a holder may learn of its loss, and after waking from a freeze (the
// library promises two heartbeat intervals, and the first look after a
// pause), not counting the stalls of the holder's process in between: a
// process that was not scheduled ran no code, the library's included.
//
// The rules, per lock:
//   - (a) two sections overlap only if the one granted first (lower token)
//     was told of its loss before the other entered, or a session-killing
//     fault ended its very session (or froze its process), it was told of
//     the loss, and it stopped relying on the hold (was told, or ended its
//     section by choice) within bound of that fault (or of waking);
//   - (b) in enter order, tokens strictly increase.
func (j *Journal) Check(bound time.Duration) Report {
	sections, faults := j.Sections(), j.Faults()
	slices.SortFunc(faults, func(a, b Fault) int { return a.At.Compare(b.At) })
	stalls := j.Stalls()
	slices.SortFunc(stalls, func(a, b Stall) int { return a.From.Compare(b.From) })
	k := &checker{faults: faults, stalls: stalls, bound: bound}
	r := Report{Holds: len(sections), Faults: map[string]int{}, ExcusedBy: map[string]int{}, WorstSignal: map[string]time.Duration{},
		WorstSignalSection: map[string]Section{}, WorstSignalFault: map[string]time.Time{}}
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
		}
		// Only a signal that came while the holder relied on the hold
		// (its section ended by it) measures the library's delay: one
		// that Release reported after the holder stopped by itself was
		// due to no one.
		if !s.Told.IsZero() && !s.Told.After(s.Exit) {
			if kind, d, at, ok := signalDelay(s, faults); ok && d >= r.WorstSignal[kind] {
				r.WorstSignal[kind] = d
				r.WorstSignalSection[kind] = s
				r.WorstSignalFault[kind] = at
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
			if i > 0 && s.Token <= top.Token && !(s.Shared && top.Shared) && (s.Token == top.Token || !k.lateEntryExcused(s)) {
				violate("token order: %s", pair(top, s))
			}
			if i == 0 || s.Token > top.Token {
				top = s
			}
		}
		// (a) overlaps. Sorted by enter, each section is compared with the
		// later ones that enter before it exits.
		for i := range ss {
			for n := i + 1; n < len(ss) && ss[n].Enter.Before(ss[i].Exit); n++ {
				first, second := ss[i], ss[n]
				if first.Shared && second.Shared {
					continue // readers may overlap
				}
				if second.Token < first.Token {
					first, second = second, first
				}
				kind, by := k.excusedBy(first, second)
				switch {
				case !first.Told.IsZero() && !first.Told.After(second.Enter):
					// Told before the takeover: the contract.
				case kind != "":
					r.Excused++
					r.ExcusedBy[kind]++
					if len(r.ExcusedSamples) < 3 {
						r.ExcusedSamples = append(r.ExcusedSamples, pair(first, second))
					}
					if by.stalled > 0 {
						r.StallExcused++
						if len(r.StallSamples) < maxViolations {
							r.StallSamples = append(r.StallSamples, fmt.Sprintf("%s: told %v after the %s, of which its process was stalled %v: %s",
								kind, by.delay.Round(time.Millisecond), kind, by.stalled.Round(time.Millisecond), pair(first, second)))
						}
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
func (k *checker) lateEntryExcused(s Section) bool {
	bound := k.bound
	if s.Told.IsZero() {
		return false
	}
	for _, f := range k.faults {
		if f.At.After(s.Enter) || f.At.Before(s.Enter.Add(-bound)) && (f.Until.IsZero() || f.Until.Before(s.Enter.Add(-bound))) {
			continue
		}
		switch {
		case f.Member != "" && f.Member == s.Member && !f.Until.IsZero():
			if _, ok := k.toldWithin(s, f.Until); ok {
				return true
			}
		case f.Kills && f.hit(s):
			if _, ok := k.toldWithin(s, f.At); ok {
				return true
			}
		}
	}
	return false
}

// signalDelay is how long after the fault that (most likely) cost s its
// hold s was told: the latest fault during the hold that could reach it.
// A freeze counts from the waking, and only for the frozen member.
func signalDelay(s Section, faults []Fault) (string, time.Duration, time.Time, bool) {
	for i := len(faults) - 1; i >= 0; i-- {
		f := faults[i]
		if f.At.After(s.Told) {
			continue
		}
		if f.At.Before(s.Enter) {
			return "", 0, time.Time{}, false
		}
		switch {
		case f.Member == "":
			return f.Kind, s.Told.Sub(f.At), f.At, true
		case f.Member == s.Member && !f.Until.IsZero():
			return f.Kind, max(0, s.Told.Sub(f.Until)), f.Until, true
		}
	}
	return "", 0, time.Time{}, false
}

// excusedBy returns the kind of the fault that explains the overlap, or ""
// when none does: a session-killing fault that ended first's session (it
// came before second entered, and first was told within bound of it), or a
// freeze of first's process (first was told within bound of waking).
func (k *checker) excusedBy(first, second Section) (string, lateness) {
	bound := k.bound
	if first.Told.IsZero() {
		return "", lateness{}
	}
	for _, f := range k.faults {
		if f.Member != "" && f.Member == first.Member && !f.Until.IsZero() &&
			!f.At.After(second.Enter) && !f.At.After(first.Exit) && !f.Until.Before(first.Enter.Add(-bound)) &&
			!first.Told.Before(f.At) {
			// Frozen while holding (or between the grant and recording
			// its entry), told soon after waking.
			if l, ok := k.toldWithin(first, f.Until); ok {
				return f.Kind, l
			}
		}
		if f.Kills && f.hit(first) && !f.At.After(second.Enter) && !f.At.Before(first.Enter.Add(-bound)) &&
			!f.At.After(first.Told) {
			if l, ok := k.toldWithin(first, f.At); ok {
				return f.Kind, l
			}
		}
	}
	return "", lateness{}
}

// checker is Check's view of the faults and stalls.
type checker struct {
	faults []Fault
	stalls []Stall
	bound  time.Duration
}

// lateness is how long after its cause a section was told, and how much of
// that its process was stalled (counted only when the delay is over the
// bound).
type lateness struct {
	delay, stalled time.Duration
}

// toldWithin reports whether s, told of its loss, stopped relying on its
// hold within the bound of from (a fault, or a waking), not counting the
// stalls of its process in between. It stopped when it was told, or when
// its section ended, if sooner: a holder that left by choice before the
// bound ran out was owed no signal yet, and Release's later report of the
// loss (ErrLockLost, which sets Told) only says when Release ran.
func (k *checker) toldWithin(s Section, from time.Time) (lateness, bool) {
	end := s.Told
	if s.Exit.Before(end) {
		end = s.Exit
	}
	l := lateness{delay: max(0, end.Sub(from))}
	if l.delay <= k.bound {
		return l, true
	}
	l.stalled = k.stalledFor(s.Member, from, end)
	return l, l.delay-l.stalled <= k.bound
}

// stalledFor is how long member's process was stalled between from and to
// (overlapping stalls counted once).
func (k *checker) stalledFor(member string, from, to time.Time) time.Duration {
	var total time.Duration
	covered := from
	for _, st := range k.stalls {
		if !slices.Contains(st.Members, member) {
			continue
		}
		a, b := st.From, st.To
		if a.Before(covered) {
			a = covered
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			total += b.Sub(a)
			covered = b
		}
	}
	return total
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
	if s.Cause != "" {
		told += " (" + s.Cause + ")"
	}
	return fmt.Sprintf("[%s token %d by %s (%s): %s..%s, %s]", s.Lock, s.Token, s.Member, cmp.Or(s.Session, "session ?"),
		s.Enter.Format("15:04:05.000000"), s.Exit.Format("15:04:05.000000"), told)
}
