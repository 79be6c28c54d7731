package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

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
			kind, d, at, own, ok := signalDelay(s, faults)
			if ok && d >= r.WorstSignal[kind] {
				r.WorstSignal[kind] = d
				r.WorstSignalSection[kind] = s
				r.WorstSignalFault[kind] = at
			}
			if ok && own && d > bound {
				// Past the bound, told after a fault that hit this very
				// hold: the signal bound missed, whether or not anyone
				// took the lock meanwhile (an overlap is rule (a)'s).
				l := lateness{delay: d, stalled: k.stalledFor(s.Member, at, s.Told)}
				sample := fmt.Sprintf("told %v after the %s, of which its process was stalled %v: %s",
					d.Round(time.Millisecond), kind, l.stalled.Round(time.Millisecond), s)
				if l.delay-l.stalled > bound {
					r.LateSignals++
				} else {
					r.LateSignalsStalled++
				}
				if len(r.LateSamples) < maxViolations {
					r.LateSamples = append(r.LateSamples, sample)
				}
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

// signalDelay is how long after the fault that (most likely) cost s its
// hold s was told. own says that fault hit s itself: the latest fault
// during the hold that ended s's session or froze its process (a freeze
// counts from the waking). Failing that, the latest fault during the hold
// that could reach it, as a best effort (own false): a silencing fault, or
// a kill whose victims the journal does not tie to s.
func signalDelay(s Section, faults []Fault) (kind string, d time.Duration, at time.Time, own, ok bool) {
	var guess *Fault // the latest fault during the hold that could reach it
	for i := len(faults) - 1; i >= 0; i-- {
		f := &faults[i]
		if f.At.After(s.Told) {
			continue
		}
		if f.At.Before(s.Enter) {
			break
		}
		switch {
		case f.Member != "" && f.Member == s.Member && !f.Until.IsZero():
			return f.Kind, max(0, s.Told.Sub(f.Until)), f.Until, true, true
		case f.Kills && f.hit(s):
			return f.Kind, s.Told.Sub(f.At), f.At, true, true
		case f.Member == "" && guess == nil:
			guess = f
		}
	}
	if guess != nil {
		return guess.Kind, s.Told.Sub(guess.At), guess.At, false, true
	}
	return "", 0, time.Time{}, false, false
}

func pair(a, b Section) string {
	return fmt.Sprintf("%s then %s", a, b)
}
