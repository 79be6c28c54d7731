package chaos

import (
	"slices"
	"time"
)

// hit reports whether f ended the session of s, or froze its process.
func (f Fault) hit(s Section) bool {
	return f.All || (f.Member != "" && f.Member == s.Member) ||
		(s.Session != "" && slices.Contains(f.Victims, s.Session))
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
