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
