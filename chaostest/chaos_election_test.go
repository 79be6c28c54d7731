package chaostest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/chaos"
)

// chaosElectionPrefix names elections' sections in the journal, apart from
// the locks': the checker holds terms of one election to the rule it holds
// holds of one lock to (no overlap unless the earlier was told first, or
// its session was killed under it and it was told within the bound), and
// their tokens to increasing order.
const chaosElectionPrefix = "election:"

// chaosStep is one step of a chaos worker: a lock hold, or one time in
// four a term of an election.
func chaosStep(runCtx context.Context, c *pgcoord.Coordinator, name string, rng *rand.Rand, sink sectionSink, late *sync.WaitGroup) holdOutcome {
	if rng.IntN(4) == 0 {
		return chaosLead(runCtx, c, name, rng, sink)
	}
	return chaosHold(runCtx, c, name, rng, sink, late)
}

// chaosLead campaigns for election name for a while, leads briefly (now and
// then for a while, so that faults hit leaders), watching Done() throughout
// as a careful leader would, and resigns; the term is journaled as a
// section.
func chaosLead(runCtx context.Context, c *pgcoord.Coordinator, name string, rng *rand.Rand, sink sectionSink) holdOutcome {
	e := c.Election(name)
	actx, cancel := context.WithTimeout(runCtx, time.Duration(50+rng.IntN(1500))*time.Millisecond)
	err := e.Campaign(actx, c.MemberID())
	cancel()
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return holdBusy
	case err != nil:
		return holdErr
	}
	token, pid := e.Token(), e.BackendPID()
	if token == 0 {
		return holdErr // lost already
	}
	s := chaos.Section{Lock: chaosElectionPrefix + name, Token: token, Member: c.MemberID(),
		Session: sessionName(pid), Enter: time.Now()}
	done := e.Done()
	sink.Enter(s)
	d := time.Duration(rng.IntN(15)) * time.Millisecond
	if rng.IntN(5) == 0 {
		d = time.Duration(100+rng.IntN(500)) * time.Millisecond
	}
	lead := time.NewTimer(d)
	select {
	case <-done:
		s.Told = time.Now()
		s.Exit = s.Told
		lead.Stop()
	case <-lead.C:
		s.Exit = time.Now()
	}
	if err := e.Resign(context.Background()); errors.Is(err, pgcoord.ErrNotLeader) && s.Told.IsZero() {
		// Lost before Resign could say so.
		s.Told = time.Now()
	}
	sink.Exit(s)
	return holdDone
}
