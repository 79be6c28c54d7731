package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/db"
)

// sceneCrash has agent-c take a lock and get killed with it, while agent-a
// waits for the same lock. It returns when agent-c was killed.
func (d *demo) sceneCrash(ctx context.Context) (time.Time, error) {
	lock := volumeLockName(crashVol)
	d.heading(fmt.Sprintf("3. agent-c crashes while it holds %s and leads the %s", lock, demoElection))

	tokenC, err := d.agentC.Do(ctx, demoCommand{Op: "migrate_volume", Vol: crashVol, Hold: true})
	if err != nil {
		return time.Time{}, err
	}
	termC, err := d.agentC.Do(ctx, demoCommand{Op: opLead})
	if err != nil {
		return time.Time{}, err
	}
	// agent-b campaigns too, and waits while agent-c leads.
	eb := d.agentB.c.Election(demoElection)
	d.tl.add(event{T: time.Now().UnixNano(), Agent: "agent-b", Kind: evWaits, Lock: electionLabel, Op: "campaign"})
	campaignAsked := time.Now()
	elected := make(chan error, 1)
	campaignCtx, cancelCampaign := context.WithCancel(ctx)
	defer cancelCampaign()
	go func() { elected <- eb.Campaign(campaignCtx, "agent-b") }()

	// agent-a wants the same volume. The Lock API (rather than
	// Synchronize) shows the fencing tokens.
	la := d.agentA.c.GetLock(lock)
	if ok, err := la.Acquire(ctx, pgcoord.NoWait); ok || err != nil {
		if ok {
			_ = la.Release(ctx)
		}
		return time.Time{}, fmt.Errorf("agent-a should find %s busy: acquired=%v, err=%v", lock, ok, err)
	}
	asked := time.Now()
	d.tl.add(event{T: asked.UnixNano(), Agent: "agent-a", Kind: evWaits, Lock: lock, Op: "extend_volume"})
	type grant struct {
		at  time.Time
		err error
	}
	granted := make(chan grant, 1)
	waitCtx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	go func() {
		ok, err := la.Acquire(waitCtx, pgcoord.Wait)
		if err == nil && !ok {
			err = errors.New("not acquired")
		}
		granted <- grant{time.Now(), err}
	}()
	defer func() {
		// Whatever happened, agent-a must not keep the lock.
		if la.Token() != 0 {
			_ = la.Release(context.Background())
		}
	}()

	// Show the state just before the crash: the holder and the waiter.
	rows, err := d.waitForWaiter(ctx, demoPrefix+lock, demoPrefix+"agent-a")
	if err != nil {
		return time.Time{}, err
	}
	d.tl.printBlock(func(w io.Writer) {
		fmt.Fprintf(w, "\npgcoord.held_locks now: agent-c holds %s, agent-a waits for it\n\n", lock)
		writeHeldLocks(w, rows, demoStyle)
		fmt.Fprintln(w)
	})

	killedAt := time.Now()
	d.tl.add(event{T: killedAt.UnixNano(), Agent: "agent-c", Kind: evKilled, Lock: lock, Op: "migrate_volume",
		Note: fmt.Sprintf("SIGKILL to pid %d: no Stop, no unlock", d.agentC.pid)})
	if err := d.agentC.kill(); err != nil {
		return killedAt, err
	}

	var g grant
	select {
	case g = <-granted:
	case <-time.After(10 * time.Second):
		return killedAt, fmt.Errorf("agent-a did not get %s within 10s of agent-c's death", lock)
	case <-ctx.Done():
		return killedAt, ctx.Err()
	}
	if g.err != nil {
		return killedAt, fmt.Errorf("agent-a waiting for %s: %w", lock, g.err)
	}
	tokenA := la.Token()
	d.tl.add(event{T: g.at.UnixNano(), Agent: "agent-a", Kind: evTakeOver, Lock: lock, Op: "extend_volume",
		Waited: g.at.Sub(asked),
		Note: fmt.Sprintf("%dms after the kill, token %d > %d",
			g.at.Sub(killedAt).Milliseconds(), tokenA, tokenC)})
	// agent-b becomes leader once agent-c's term is over: its session died
	// with the process, and a successor of a leader that did not resign
	// waits a few of its heartbeats more, so that a leader that is merely
	// cut off has been told before anyone else acts.
	select {
	case err := <-elected:
		if err != nil {
			return killedAt, fmt.Errorf("agent-b campaigning: %w", err)
		}
	case <-time.After(10 * time.Second):
		return killedAt, fmt.Errorf("agent-b was not elected within 10s of agent-c's death")
	case <-ctx.Done():
		return killedAt, ctx.Err()
	}
	electedAt := time.Now()
	d.tl.add(event{T: electedAt.UnixNano(), Agent: "agent-b", Kind: evTakeOver, Lock: electionLabel, Op: "campaign",
		Waited: electedAt.Sub(campaignAsked),
		Note: fmt.Sprintf("%dms after the kill, term token %d > %d",
			electedAt.Sub(killedAt).Milliseconds(), eb.Token(), termC)})
	if !sleepCtx(ctx, 100*time.Millisecond) {
		return killedAt, ctx.Err()
	}
	d.tl.add(event{T: time.Now().UnixNano(), Agent: "agent-a", Kind: evReleases, Lock: lock, Op: "extend_volume"})
	if err := la.Release(ctx); err != nil {
		return killedAt, fmt.Errorf("agent-a releasing %s: %w", lock, err)
	}
	d.tl.printBlock(func(w io.Writer) {
		fmt.Fprintf(w, "\nPostgreSQL ended agent-c's sessions when its process died, and with them its\n"+
			"locks: the waiter got %s at once. Its fencing token is larger, so a\n"+
			"store that checks tokens would refuse a late write from agent-c. agent-b\n"+
			"became the %s's leader, with a larger term token, a few heartbeats later:\n"+
			"an elected successor waits until a leader that was only cut off has been\n"+
			"told, so two leaders never act at once.\n", lock, demoElection)
	})
	return killedAt, nil
}

// waitForWaiter polls held_locks until member waits for the lock full and
// returns the demo's rows then.
func (d *demo) waitForWaiter(ctx context.Context, full, member string) ([]db.ListHeldLocksRow, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rows, err := demoHeldLocks(ctx, d.obs)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if r.Name == full && r.MemberID == member && !r.Granted {
				return rows, nil
			}
		}
		if !sleepCtx(ctx, 10*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("%s did not show up waiting for %s in pgcoord.held_locks", member, full)
}
