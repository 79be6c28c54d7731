package chaostest

import (
	"context"
	"errors"
	"fmt"
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

// chaosSemaphorePrefix names semaphore slots' sections: each slot is held
// to the rules of a lock, so never more than the limit hold at once.
const chaosSemaphorePrefix = "semaphore:"

// chaosSemaphoreLimit is the limit of the chaos semaphores.
const chaosSemaphoreLimit = 2

// chaosStep is one step of a chaos worker: an exclusive lock hold, a
// shared one (shared sections of a name may overlap each other, never an
// exclusive one), a term of an election, or a semaphore slot.
func chaosStep(runCtx context.Context, c *pgcoord.Coordinator, name string, rng *rand.Rand, sink sectionSink, late *sync.WaitGroup) holdOutcome {
	switch r := rng.IntN(8); {
	case r < 2:
		return chaosLead(runCtx, c, name, rng, sink)
	case r < 4:
		return chaosHoldMode(runCtx, c, name, true, rng, sink, late)
	case r < 5:
		return chaosSlot(runCtx, c, name, rng, sink, late)
	}
	return chaosHold(runCtx, c, name, rng, sink, late)
}

// chaosSlot takes a slot of semaphore name (limit chaosSemaphoreLimit) and
// holds it as chaosHold holds a lock; the slot is journaled as a lock of
// its own.
func chaosSlot(runCtx context.Context, c *pgcoord.Coordinator, name string, rng *rand.Rand, sink sectionSink, late *sync.WaitGroup) holdOutcome {
	sem := c.Semaphore(name, chaosSemaphoreLimit)
	modes := []pgcoord.Blocking{pgcoord.NoWait, pgcoord.Timeout(time.Duration(50+rng.IntN(400)) * time.Millisecond), pgcoord.Wait}
	actx, cancel := context.WithTimeout(runCtx, 2*time.Second)
	ok, err := sem.Acquire(actx, modes[rng.IntN(len(modes))])
	cancel()
	noDeadlock(err)
	switch {
	case err != nil:
		return holdErr
	case !ok:
		return holdBusy
	}
	token, slot, pid := sem.Token(), sem.Slot(), sem.BackendPID()
	if token == 0 {
		return holdErr // lost already
	}
	s := chaos.Section{Lock: fmt.Sprintf("%s%s#%d", chaosSemaphorePrefix, name, slot), Token: token,
		Member: c.MemberID(), Session: sessionName(pid), Enter: time.Now()}
	lost := sem.Lost()
	sink.Enter(s)
	d := time.Duration(rng.IntN(15)) * time.Millisecond
	if rng.IntN(5) == 0 {
		d = time.Duration(100+rng.IntN(500)) * time.Millisecond
	}
	timer := time.NewTimer(d)
	select {
	case <-lost:
		s.Told = time.Now()
		s.Exit = s.Told
		timer.Stop()
		sink.Leaving(s)
		if err := sem.Release(context.Background()); err != nil {
			s.Cause = err.Error()
		}
	case <-timer.C:
		s.Exit = time.Now()
		sink.Leaving(s)
		err := sem.Release(context.Background())
		if errors.Is(err, pgcoord.ErrLockLost) {
			s.Told = time.Now()
			s.Cause = err.Error()
		} else if err == nil && late != nil {
			late.Go(func() {
				wait := time.NewTimer(chaosSignalBound)
				defer wait.Stop()
				select {
				case <-lost:
					s.Told = time.Now()
				case <-wait.C:
				}
				sink.Exit(s)
			})
			return holdDone
		}
	}
	sink.Exit(s)
	return holdDone
}

// chaosLead campaigns for election name for a while, leads briefly (now and
// then for a while, so that faults hit leaders), watching Done() throughout
// as a careful leader would, and resigns; the term is journaled as a
// section.
func chaosLead(runCtx context.Context, c *pgcoord.Coordinator, name string, rng *rand.Rand, sink sectionSink) holdOutcome {
	e := c.Election(name)
	actx, cancel := context.WithTimeout(runCtx, time.Duration(50+rng.IntN(1500))*time.Millisecond)
	err := noDeadlock(e.Campaign(actx, c.MemberID()))
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
	sink.Leaving(s)
	err = e.Resign(context.Background())
	if (errors.Is(err, pgcoord.ErrNotLeader) || errors.Is(err, pgcoord.ErrLockLost)) && s.Told.IsZero() {
		// Lost before Resign could say so (ErrNotLeader: at its look;
		// ErrLockLost: its unlock found the lock gone), as chaosHold
		// counts a Release that reports the loss.
		s.Told = time.Now()
	}
	if err != nil {
		// Whatever Resign said, told or not: a term that overlapped
		// another then shows why (the one overlap of elections seen, at
		// a0db7b4, left no cause behind).
		s.Cause = err.Error()
	}
	sink.Exit(s)
	return holdDone
}
