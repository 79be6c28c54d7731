package pgcoord

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The statistics of elections, semaphores and groups, per name. They are
// counted where those primitives change state (a term won or ended, a slot
// taken or given back, a group joined, left or read), never on a Lock's
// Acquire or Release: a plain lock's path does not look at them. Names are
// chosen by the application and few per process (an election per role, a
// semaphore per resource pool, a group per service), unlike lock names,
// which are often per object; so they are reported one by one, and the
// number of names tracked per kind is capped (maxStatNames) in case an
// application makes them per object after all.

// maxStatNames is how many names of each kind (elections, semaphores,
// groups) Stats reports at most: those first used since New. A primitive
// of a name past the cap works as ever; it is only not counted. The cap
// keeps a process that names elections or semaphores per request from
// growing the stats (and a metrics backend's series) without bound.
const maxStatNames = 256

// ElectionStats is Stats' account of one election this coordinator has
// campaigned in (Campaign or RunAsLeader) since New.
type ElectionStats struct {
	// Name is the election's name, without Prefix.
	Name string
	// Leader is true while this coordinator leads the election: a term it
	// won has not ended. A term ends at Resign, at the loss of its lock (a
	// dead or silent session, a lease run out; within two heartbeats, see
	// Election) or at Stop.
	Leader bool
	// TermsWon counts the terms this coordinator won: Campaigns that
	// returned nil as a new leader (a Campaign while leading, which only
	// changes the value, is no new term).
	TermsWon uint64
	// TermsEnded counts the terms won that have ended, however: resigned,
	// lost, or ended by Stop. TermsWon-TermsEnded is 1 while Leader.
	TermsEnded uint64
	// TermsLost counts the terms of TermsEnded that ended by a fault
	// rather than by Resign or Stop: the lock's session died, was cut off
	// or went silent, or its lease ran out.
	TermsLost uint64
}

// SemaphoreStats is Stats' account of one semaphore this coordinator has
// tried to take (Semaphore.Acquire) since New.
type SemaphoreStats struct {
	// Name is the semaphore's name, without Prefix.
	Name string
	// Held is the number of its slots this coordinator holds now (through
	// all of its Semaphores of that name, whatever their limit). A slot
	// stops counting at Release, when it is lost (as Semaphore.Lost
	// reports) and at Stop.
	Held int
}

// GroupStats is Stats' account of one group this coordinator is in
// (JoinGroup) or watches (WatchGroup).
type GroupStats struct {
	// Name is the group's name, without Prefix.
	Name string
	// Joined is true while this member is in the group: JoinGroup
	// succeeded, and neither LeaveGroup nor Stop has run since.
	Joined bool
	// Watches is the number of WatchGroup channels of the group open now.
	Watches int
	// Members is the number of running members of the group (this one
	// included when Joined) at this coordinator's last read of it; ReadAt
	// is when that read ended (zero, and Members 0, before the first).
	// WatchGroup reads the group at once, at every change notified and
	// every HeartbeatInterval; GroupMembers reads it too. A group joined
	// but not watched is read only by GroupMembers calls: the metrics
	// modules make one per scrape for such a group.
	Members int
	ReadAt  time.Time
}

// electionStat is the counters of one election name.
type electionStat struct {
	// For every term won is counted before ended, and ended before lost,
	// so a reader that loads them in the other order never sees more terms
	// lost than ended, or ended than won.
	won, ended, lost atomic.Uint64
}

// semaphoreStat is the count of one semaphore name's slots held.
type semaphoreStat struct{ held atomic.Int64 }

// groupStat is what this coordinator knows of one group; guarded by
// primStats.mu.
type groupStat struct {
	joined  bool
	watches int
	members int
	readAt  time.Time
}

// primStats holds the per-name statistics behind Stats' Elections,
// Semaphores and Groups.
type primStats struct {
	mu         sync.Mutex
	elections  map[string]*electionStat
	semaphores map[string]*semaphoreStat
	groups     map[string]*groupStat
}

// statFor returns m[name], made if missing and the cap allows; nil past
// the cap. Called with p.mu held.
func statFor[T any](m *map[string]*T, name string) *T {
	if st, ok := (*m)[name]; ok {
		return st
	}
	if len(*m) >= maxStatNames {
		return nil
	}
	if *m == nil {
		*m = map[string]*T{}
	}
	st := new(T)
	(*m)[name] = st
	return st
}

// election returns the counters of election name (nil past the cap).
func (p *primStats) election(name string) *electionStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	return statFor(&p.elections, name)
}

// semaphore returns the count of semaphore name (nil past the cap).
func (p *primStats) semaphore(name string) *semaphoreStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	return statFor(&p.semaphores, name)
}

// group runs f on the record of group name, made if missing and create
// is set; f is not run when there is none (or the cap is reached).
func (p *primStats) group(name string, create bool, f func(*groupStat)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.groups[name]
	if st == nil && create {
		st = statFor(&p.groups, name)
	}
	if st != nil {
		f(st)
	}
}

// groupRead records a read of group name that found members running
// members, if the group is tracked (joined or watched): a GroupMembers
// call for any other group must not add a name.
func (p *primStats) groupRead(name string, members int) {
	p.group(name, false, func(st *groupStat) {
		st.members = members
		st.readAt = time.Now()
	})
}

// snapshot returns the per-name statistics, each kind sorted by name.
// running is false after Stop: no group is joined then.
func (p *primStats) snapshot(running bool) (es []ElectionStats, ss []SemaphoreStats, gs []GroupStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, st := range p.elections {
		lost := st.lost.Load()
		ended := st.ended.Load()
		won := st.won.Load()
		es = append(es, ElectionStats{Name: name, Leader: won > ended, TermsWon: won, TermsEnded: ended, TermsLost: lost})
	}
	for name, st := range p.semaphores {
		ss = append(ss, SemaphoreStats{Name: name, Held: int(st.held.Load())})
	}
	for name, st := range p.groups {
		joined := st.joined && running
		if !joined && st.watches == 0 {
			continue // neither joined nor watched: nothing to report
		}
		gs = append(gs, GroupStats{Name: name, Joined: joined, Watches: st.watches, Members: st.members, ReadAt: st.readAt})
	}
	slices.SortFunc(es, func(a, b ElectionStats) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(ss, func(a, b SemaphoreStats) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(gs, func(a, b GroupStats) int { return cmp.Compare(a.Name, b.Name) })
	return es, ss, gs
}

// termCount counts one term in its election's stats: won when Campaign
// returns it, ended when it ends. The two can come in either order (the
// lock can be lost while Campaign records the term), so each records what
// it saw and the later one counts what the earlier could not.
type termCount struct {
	st *electionStat // nil: not counted (past the cap)

	mu    sync.Mutex
	won   bool
	ended bool
	lost  bool
}

// markWon counts the term as won (and as ended, if it already has).
func (tc *termCount) markWon() {
	if tc.st == nil {
		return
	}
	tc.mu.Lock()
	tc.won = true
	ended, lost := tc.ended, tc.lost
	tc.mu.Unlock()
	tc.st.won.Add(1)
	if ended {
		tc.st.countEnd(lost)
	}
}

// markEnded counts the term's end, once it is won; cause is the hold's
// loss cause, nil for Resign (or a term that never began).
func (tc *termCount) markEnded(cause error) {
	if tc.st == nil {
		return
	}
	tc.mu.Lock()
	tc.ended = true
	tc.lost = cause != nil && !errors.Is(cause, errStopped)
	won, lost := tc.won, tc.lost
	tc.mu.Unlock()
	if won {
		tc.st.countEnd(lost)
	}
}

func (st *electionStat) countEnd(lost bool) {
	st.ended.Add(1)
	if lost {
		st.lost.Add(1)
	}
}
