package chaos

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestSequentialHoldsPass(t *testing.T) {
	var j Journal
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(10)})
	j.Record(Section{Lock: "a", Token: 2, Enter: at(10), Exit: at(20)})
	j.Record(Section{Lock: "b", Token: 3, Enter: at(5), Exit: at(15)}) // other lock
	r := j.Check(time.Second)
	if !r.OK() || r.Holds != 3 {
		t.Fatalf("want OK with 3 holds: %v %v", r, r.Violations)
	}
}

func TestOverlapWithoutSignalFails(t *testing.T) {
	var j Journal
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(30)})
	j.Record(Section{Lock: "a", Token: 2, Enter: at(10), Exit: at(20)})
	r := j.Check(time.Second)
	if r.OK() || !strings.Contains(r.Violations[0], "overlap") {
		t.Fatalf("want an overlap: %v", r.Violations)
	}
}

func TestOverlapAfterSignalPasses(t *testing.T) {
	var j Journal
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(30), Told: at(9)})
	j.Record(Section{Lock: "a", Token: 2, Enter: at(10), Exit: at(20)})
	if r := j.Check(time.Second); !r.OK() || r.Losses != 1 {
		t.Fatalf("told before takeover is the contract: %v %v", r, r.Violations)
	}
}

func TestOverlapAfterKillExcusedWithinBound(t *testing.T) {
	var j Journal
	j.AddFault(Fault{Kind: "terminate", At: at(5), Kills: true, Victims: []string{"pid:7"}})
	j.Record(Section{Lock: "a", Token: 1, Session: "pid:7", Enter: at(0), Exit: at(200), Told: at(200)})
	j.Record(Section{Lock: "a", Token: 2, Session: "pid:8", Enter: at(10), Exit: at(20)})
	r := j.Check(500 * time.Millisecond)
	if !r.OK() || r.Excused != 1 || r.ExcusedBy["terminate"] != 1 || r.WorstSignal["terminate"] != 195*time.Millisecond {
		t.Fatalf("want excused: %v %v", r, r.Violations)
	}
	if !strings.Contains(r.String(), "excused-overlaps=1[terminate=1]") {
		t.Fatalf("summary %q", r)
	}
	// Told too late for the bound.
	if r := j.Check(100 * time.Millisecond); r.OK() {
		t.Fatal("want a violation past the bound")
	}
}

// A killing fault excuses only overlaps whose earlier holder was its
// victim: terminating some other session explains nothing.
func TestOverlapAfterKillOfAnotherSessionFails(t *testing.T) {
	var j Journal
	j.AddFault(Fault{Kind: "terminate", At: at(5), Kills: true, Victims: []string{"pid:9"}})
	j.Record(Section{Lock: "a", Token: 1, Session: "pid:7", Enter: at(0), Exit: at(200), Told: at(200)})
	j.Record(Section{Lock: "a", Token: 2, Session: "pid:8", Enter: at(10), Exit: at(20)})
	if r := j.Check(time.Second); r.OK() {
		t.Fatal("a kill of another session excused an overlap")
	}
	// A restart hits every session.
	var k Journal
	k.AddFault(Fault{Kind: "restart", At: at(5), Kills: true, All: true})
	k.Record(Section{Lock: "a", Token: 1, Session: "pid:7", Enter: at(0), Exit: at(200), Told: at(200)})
	k.Record(Section{Lock: "a", Token: 2, Session: "pid:8", Enter: at(10), Exit: at(20)})
	if r := k.Check(time.Second); !r.OK() || r.ExcusedBy["restart"] != 1 {
		t.Fatalf("want excused by the restart: %v %v", r, r.Violations)
	}
}

func TestOverlapAfterSilencingFaultNotExcused(t *testing.T) {
	var j Journal
	j.Fault("blackhole", at(5))
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(200), Told: at(200)})
	j.Record(Section{Lock: "a", Token: 2, Enter: at(10), Exit: at(20)})
	if r := j.Check(time.Second); r.OK() {
		t.Fatal("a silenced holder must be told before takeover")
	}
}

func TestTokenInversionFails(t *testing.T) {
	var j Journal
	j.Record(Section{Lock: "a", Token: 5, Enter: at(0), Exit: at(10)})
	j.Record(Section{Lock: "a", Token: 4, Enter: at(20), Exit: at(30)})
	r := j.Check(time.Second)
	if r.OK() || !strings.Contains(r.Violations[0], "token order") {
		t.Fatalf("want a token violation: %v", r.Violations)
	}
	j.Record(Section{Lock: "b", Token: 7, Enter: at(0), Exit: at(10)})
	j.Record(Section{Lock: "b", Token: 7, Enter: at(20), Exit: at(30)})
	if r := j.Check(time.Second); len(r.Violations) != 2 {
		t.Fatalf("equal tokens are not increasing: %v", r.Violations)
	}
}

func TestSummaryCountsFaults(t *testing.T) {
	var j Journal
	j.AddFault(Fault{Kind: "terminate", At: at(1), Kills: true})
	j.AddFault(Fault{Kind: "terminate", At: at(2), Kills: true})
	j.Fault("latency", at(3))
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(50), Told: at(50)})
	s := j.Check(time.Second).String()
	if !strings.Contains(s, "faults[latency=1 terminate=2]") || !strings.Contains(s, "violations=0") ||
		!strings.Contains(s, "worst-fault-to-signal[latency=47ms]") {
		t.Fatalf("summary %q", s)
	}
}

func TestOverlapWithFrozenHolderExcusedIfToldOnWaking(t *testing.T) {
	var j Journal
	j.AddFault(Fault{Kind: "freeze", At: at(5), Member: "m1", Until: at(3000)})
	j.Record(Section{Lock: "a", Token: 1, Member: "m1", Enter: at(0), Exit: at(3010), Told: at(3100)})
	j.Record(Section{Lock: "a", Token: 2, Member: "m2", Enter: at(2000), Exit: at(2020)})
	if r := j.Check(500 * time.Millisecond); !r.OK() || r.Excused != 1 {
		t.Fatalf("want excused: %v %v", r, r.Violations)
	}
	// A freeze of another member excuses nothing.
	var k Journal
	k.AddFault(Fault{Kind: "freeze", At: at(5), Member: "m3", Until: at(3000)})
	k.Record(Section{Lock: "a", Token: 1, Member: "m1", Enter: at(0), Exit: at(3010), Told: at(3100)})
	k.Record(Section{Lock: "a", Token: 2, Member: "m2", Enter: at(2000), Exit: at(2020)})
	if r := k.Check(500 * time.Millisecond); r.OK() {
		t.Fatal("want a violation")
	}
}

// A process frozen between its grant and recording its entry enters "late"
// with a lower token than its successor: fencing at work, not a violation,
// provided it is told on waking.
func TestLateEntryAfterFreezeExcused(t *testing.T) {
	var j Journal
	j.AddFault(Fault{Kind: "freeze", At: at(100), Member: "child", Until: at(3500)})
	j.Record(Section{Lock: "a", Token: 303, Member: "m", Enter: at(3400), Exit: at(3700)})
	j.Record(Section{Lock: "a", Token: 171, Member: "child", Enter: at(3510), Exit: at(3511), Told: at(3511)})
	if r := j.Check(500 * time.Millisecond); !r.OK() || r.Excused != 1 {
		t.Fatalf("want excused: %v %v", r, r.Violations)
	}
	// Never told: a real violation, of both rules.
	var k Journal
	k.AddFault(Fault{Kind: "freeze", At: at(100), Member: "child", Until: at(3500)})
	k.Record(Section{Lock: "a", Token: 303, Member: "m", Enter: at(3400), Exit: at(3700)})
	k.Record(Section{Lock: "a", Token: 171, Member: "child", Enter: at(3510), Exit: at(3600)})
	if r := k.Check(500 * time.Millisecond); len(r.Violations) != 2 {
		t.Fatalf("want two violations: %v", r.Violations)
	}
}

func TestSharedSectionsMayOverlap(t *testing.T) {
	var j Journal
	j.Record(Section{Lock: "a", Token: 2, Enter: at(0), Exit: at(30), Shared: true})
	j.Record(Section{Lock: "a", Token: 1, Enter: at(5), Exit: at(20), Shared: true}) // entered late: readers may
	j.Record(Section{Lock: "a", Token: 3, Enter: at(30), Exit: at(40)})
	if r := j.Check(time.Second); !r.OK() {
		t.Fatalf("readers overlapping each other is the contract: %v", r.Violations)
	}
}

func TestSharedOverlappingExclusiveFails(t *testing.T) {
	var j Journal
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(30), Shared: true})
	j.Record(Section{Lock: "a", Token: 2, Enter: at(10), Exit: at(20)})
	r := j.Check(time.Second)
	if r.OK() || !strings.Contains(r.Violations[0], "overlap") {
		t.Fatalf("want an overlap of a writer with a reader: %v", r.Violations)
	}
}

func TestWorstSignalCountsOnlyTellsWhileHeld(t *testing.T) {
	var j Journal
	j.AddFault(Fault{Kind: "restart", At: at(5), Kills: true, All: true})
	// Released by choice at 20; Release reported the loss at 900: no one
	// relied on the hold by then.
	j.Record(Section{Lock: "a", Token: 1, Enter: at(0), Exit: at(20), Told: at(900)})
	j.Record(Section{Lock: "b", Token: 2, Enter: at(0), Exit: at(105), Told: at(105)})
	r := j.Check(time.Second)
	if r.WorstSignal["restart"] != 100*time.Millisecond || r.Losses != 2 {
		t.Fatalf("want the held section's 100ms, and 2 losses: %v", r)
	}
	if s := r.WorstSignalSection["restart"]; s.Lock != "b" || !r.WorstSignalFault["restart"].Equal(at(5)) {
		t.Fatalf("worst section %v at %v", s, r.WorstSignalFault["restart"])
	}
}

func TestStallOfHoldersProcessNotCounted(t *testing.T) {
	journal := func(stalls ...Stall) *Journal {
		var j Journal
		j.AddFault(Fault{Kind: "restart", At: at(100), Kills: true, All: true})
		j.Record(Section{Lock: "a", Token: 1, Member: "m1", Enter: at(0), Exit: at(600), Told: at(600)})
		j.Record(Section{Lock: "a", Token: 2, Member: "m2", Enter: at(120), Exit: at(130)})
		for _, s := range stalls {
			j.Stall(s)
		}
		return &j
	}
	// Told 500 ms after the restart, against 400: a violation...
	if r := journal().Check(400 * time.Millisecond); r.OK() {
		t.Fatal("want a violation past the bound")
	}
	// ... unless m1's process was stalled for over 100 ms of it (two
	// overlapping stalls count once).
	r := journal(Stall{Members: []string{"m0", "m1"}, From: at(200), To: at(280)},
		Stall{Members: []string{"m0", "m1"}, From: at(250), To: at(330)}).Check(400 * time.Millisecond)
	if !r.OK() || r.Excused != 1 || r.StallExcused != 1 || !strings.Contains(r.StallSamples[0], "stalled 130ms") {
		t.Fatalf("want excused by the stall: %v %v %v", r, r.Violations, r.StallSamples)
	}
	// Another process's stall, or one outside the window, does not count.
	for _, st := range []Stall{
		{Members: []string{"m2"}, From: at(200), To: at(400)},
		{Members: []string{"m1"}, From: at(610), To: at(900)},
		{Members: []string{"m1"}, From: at(0), To: at(90)},
	} {
		if r := journal(st).Check(400 * time.Millisecond); r.OK() {
			t.Fatalf("stall %v excused it", st)
		}
	}
}

func TestHolderLeftWithinBoundOwedNoSignalYet(t *testing.T) {
	journal := func(exit int) *Journal {
		var j Journal
		j.AddFault(Fault{Kind: "reset", At: at(0), Kills: true, Victims: []string{"pid:7"}})
		// Its session was reset at 0; it left by choice at exit, and its
		// Release reported the loss at 700.
		j.Record(Section{Lock: "a", Token: 1, Session: "pid:7", Enter: at(-50), Exit: at(exit), Told: at(700)})
		j.Record(Section{Lock: "a", Token: 2, Session: "pid:8", Enter: at(96), Exit: at(100)})
		return &j
	}
	if r := journal(141).Check(400 * time.Millisecond); !r.OK() || r.ExcusedBy["reset"] != 1 {
		t.Fatalf("left 141 ms after the reset, within the bound: want excused: %v %v", r, r.Violations)
	}
	if r := journal(450).Check(400 * time.Millisecond); r.OK() {
		t.Fatal("relied on it 450 ms after the reset, untold: want a violation")
	}
}

func TestLateSignalAfterOwnFaultCounted(t *testing.T) {
	journal := func(stalls ...Stall) *Journal {
		var j Journal
		// The kill of m1's session at 100; at 450 another session's kill,
		// which must not be taken as the cause of m1's signal.
		j.AddFault(Fault{Kind: "terminate", At: at(100), Kills: true, Victims: []string{"pid:7"}})
		j.AddFault(Fault{Kind: "terminate", At: at(450), Kills: true, Victims: []string{"pid:9"}})
		j.Record(Section{Lock: "a", Token: 1, Member: "m1", Session: "pid:7", Enter: at(0), Exit: at(600), Told: at(600)})
		for _, s := range stalls {
			j.Stall(s)
		}
		return &j
	}
	// Told 500 ms after its own session's kill, against 400: late, though
	// nobody took the lock (no overlap, so the run passes).
	r := journal().Check(400 * time.Millisecond)
	if !r.OK() || r.LateSignals != 1 || r.LateSignalsStalled != 0 || r.WorstSignal["terminate"] != 500*time.Millisecond {
		t.Fatalf("want one late signal of 500ms: %v %v", r, r.LateSamples)
	}
	if !strings.Contains(r.String(), "past-the-bound-after-own-fault=1 (within it only less stalls: 0)") ||
		!strings.Contains(r.LateSamples[0], "told 500ms after the terminate") {
		t.Fatalf("summary %q, samples %v", r, r.LateSamples)
	}
	// Within the bound once 150 ms of its process's stall is not counted.
	r = journal(Stall{Members: []string{"m1"}, From: at(200), To: at(350)}).Check(400 * time.Millisecond)
	if r.LateSignals != 0 || r.LateSignalsStalled != 1 || !strings.Contains(r.LateSamples[0], "stalled 150ms") {
		t.Fatalf("want it within the bound less the stall: %v %v", r, r.LateSamples)
	}
	// Within the bound: nothing counted.
	if r := journal().Check(time.Second); r.LateSignals+r.LateSignalsStalled != 0 {
		t.Fatalf("counted within the bound: %v", r)
	}
	// A signal whose cause the journal cannot tie to the hold (another
	// session's kill) is a best-effort worst figure, never a late signal.
	var j Journal
	j.AddFault(Fault{Kind: "terminate", At: at(100), Kills: true, Victims: []string{"pid:9"}})
	j.Record(Section{Lock: "a", Token: 1, Member: "m1", Session: "pid:7", Enter: at(0), Exit: at(900), Told: at(900)})
	if r := j.Check(400 * time.Millisecond); r.LateSignals+r.LateSignalsStalled != 0 || r.WorstSignal["terminate"] != 800*time.Millisecond {
		t.Fatalf("want a best-effort worst of 800ms and no late signal: %v", r)
	}
}
