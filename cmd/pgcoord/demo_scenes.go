package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pgcoord/pgcoord/db"
)

// demoScripts are the operations of the first scene: each agent works
// through its list, so that they meet on the same volumes.
var demoScripts = []struct {
	agent string
	cmds  []demoCommand
}{
	{"agent-a", []demoCommand{
		{Op: "create_snapshot", Vol: "vol-1", Work: 150 * time.Millisecond},
		{Op: "extend_volume", Vol: "vol-2", Work: 100 * time.Millisecond},
		{Op: "attach_volume", Vol: "vol-3", Work: 80 * time.Millisecond},
		{Op: "delete_snapshot", Vol: "vol-1", Work: 60 * time.Millisecond},
	}},
	{"agent-b", []demoCommand{
		{Op: "extend_volume", Vol: "vol-1", Work: 120 * time.Millisecond},
		{Op: "create_snapshot", Vol: "vol-3", Work: 140 * time.Millisecond},
		{Op: "detach_volume", Vol: "vol-2", Work: 70 * time.Millisecond},
		{Op: "retype_volume", Vol: "vol-1", Work: 90 * time.Millisecond},
	}},
	{"agent-c", []demoCommand{
		{Op: "attach_volume", Vol: "vol-2", Work: 90 * time.Millisecond},
		{Op: "delete_snapshot", Vol: "vol-1", Work: 80 * time.Millisecond},
		{Op: "extend_volume", Vol: "vol-3", Work: 110 * time.Millisecond},
		{Op: "create_snapshot", Vol: "vol-2", Work: 100 * time.Millisecond},
	}},
}

// heldSnapshot is pgcoord.held_locks at one moment.
type heldSnapshot struct {
	at   time.Time
	rows []db.ListHeldLocksRow
}

// sceneOperations runs the scripts of the three agents at once and returns
// the busiest held_locks seen meanwhile.
func (d *demo) sceneOperations(ctx context.Context) (heldSnapshot, error) {
	n := 0
	for _, s := range demoScripts {
		n += len(s.cmds)
	}
	d.heading(fmt.Sprintf("1. %d volume operations, 3 agents, 3 volumes", n))
	agents := map[string]demoAgent{"agent-a": d.agentA, "agent-b": d.agentB, "agent-c": d.agentC}

	// While the agents work, this goroutine samples held_locks for the
	// tables of the next scene: a snapshot taken afterwards would be empty.
	stopWatch := make(chan struct{})
	snapCh := make(chan heldSnapshot, 1)
	go func() { snapCh <- d.watchHeldLocks(ctx, stopWatch) }()

	d.tl.resetClock()
	var wg sync.WaitGroup
	errCh := make(chan error, len(demoScripts))
	for _, s := range demoScripts {
		ag := agents[s.agent]
		wg.Go(func() {
			for i, cmd := range s.cmds {
				if i > 0 && !sleepCtx(ctx, demoPause) {
					errCh <- ctx.Err()
					return
				}
				if _, err := ag.Do(ctx, cmd); err != nil {
					errCh <- fmt.Errorf("%s: %s %s: %w", s.agent, cmd.Op, cmd.Vol, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stopWatch)
	snap := <-snapCh
	close(errCh)
	var errs []error
	for err := range errCh {
		errs = append(errs, err)
	}
	d.tl.printBlock(nil)
	return snap, errors.Join(errs...)
}

// watchHeldLocks polls held_locks until stop is closed and returns the
// snapshot with the most locks held, preferring one that also shows a
// waiter. stop is a channel, not a cancelled ctx, because pgx closes a
// connection whose query is cancelled, and d.obs has more work to do.
func (d *demo) watchHeldLocks(ctx context.Context, stop <-chan struct{}) heldSnapshot {
	var best heldSnapshot
	bestScore := -1
	tick := time.NewTicker(15 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return best
		case <-ctx.Done():
			return best
		case <-tick.C:
		}
		rows, err := demoHeldLocks(ctx, d.obs)
		if err != nil {
			continue
		}
		score, waiter := 0, 0
		for _, r := range rows {
			if r.Granted {
				score += 2
			} else {
				waiter = 1 // one waiter is enough to show
			}
		}
		score += waiter
		if score > bestScore {
			best, bestScore = heldSnapshot{at: time.Now(), rows: rows}, score
		}
	}
}

// sceneTables shows the members and the snapshot of held_locks.
func (d *demo) sceneTables(ctx context.Context, snap heldSnapshot) error {
	d.heading("2. Members and locks, as PostgreSQL sees them")
	members, now, err := demoMembers(ctx, d.obs)
	if err != nil {
		return err
	}
	at := d.tl.stampOf(snap.at)
	d.tl.printBlock(func(w io.Writer) {
		fmt.Fprintln(w, "pgcoord.live_members: one row per running coordinator, refreshed every 200ms")
		fmt.Fprintln(w)
		writeMembers(w, liveOnly(members), now, demoStyle)
		fmt.Fprintln(w)
		if len(snap.rows) == 0 {
			fmt.Fprintln(w, "pgcoord.held_locks: no lock was seen held while the agents worked")
			return
		}
		fmt.Fprintf(w, "pgcoord.held_locks at %s, while the agents worked (a waiter shows GRANTED = waiting)\n\n",
			at)
		writeHeldLocks(w, snap.rows, demoStyle)
	})
	return nil
}

// sceneStale shows agent-c gone from live_members while its row stays.
func (d *demo) sceneStale(ctx context.Context, killedAt time.Time) error {
	if !sleepCtx(ctx, time.Until(killedAt.Add(staleAfter))) {
		return ctx.Err()
	}
	d.heading(fmt.Sprintf("4. %v after the crash", staleAfter))
	members, now, err := demoMembers(ctx, d.obs)
	if err != nil {
		return err
	}
	var dead db.ListMembersRow
	for _, m := range members {
		if m.MemberID == demoPrefix+"agent-c" {
			dead = m
		}
	}
	if dead.Live {
		return fmt.Errorf("agent-c is still in pgcoord.live_members after it was killed")
	}
	d.tl.printBlock(func(w io.Writer) {
		fmt.Fprintln(w, "pgcoord.live_members: agent-c is gone, since its member lock died with its session")
		fmt.Fprintln(w)
		writeMembers(w, liveOnly(members), now, demoStyle)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "pgcoord.members: agent-c's row stays, never marked stopped, with its last heartbeat")
		fmt.Fprintln(w)
		writeMembers(w, members, now, demoStyle)
		if dead.LastHeartbeat.Valid {
			fmt.Fprintf(w, "\nagent-c last beat %s ago; the live agents beat every %v.\n",
				fmtAge(now.Sub(dead.LastHeartbeat.Time)), demoHeartbeat)
		}
	})
	return nil
}

// sceneSummary stops agent-a and agent-b and sums the timeline up.
func (d *demo) sceneSummary() error {
	d.heading("5. Summary")
	d.stopAgents()
	type stats struct {
		ops, waits int
		maxWait    time.Duration
	}
	per := map[string]*stats{}
	for _, id := range []string{"agent-a", "agent-b", "agent-c"} {
		per[id] = &stats{}
	}
	for _, ev := range d.tl.events() {
		s := per[ev.Agent]
		if s == nil {
			continue
		}
		switch ev.Kind {
		case evReleases:
			s.ops++
		case evWaits:
			s.waits++
		case evHolds, evTakeOver:
			s.maxWait = max(s.maxWait, ev.Waited)
		}
	}
	d.tl.printBlock(func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "%sAGENT\tOPS_DONE\tWAITS\tMAX_WAIT\tENDED\n", demoStyle.indent)
		for _, id := range []string{"agent-a", "agent-b", "agent-c"} {
			s := per[id]
			note := "stopped"
			if id == "agent-c" {
				note = "killed while holding " + volumeLockName(crashVol) + " and leading the " + demoElection
			}
			fmt.Fprintf(tw, "%s%s\t%d\t%d\t%dms\t%s\n", demoStyle.indent, id, s.ops, s.waits, s.maxWait.Milliseconds(), note)
		}
		_ = tw.Flush()
		fmt.Fprintf(w, "\nDemo finished in %.1fs.\n", time.Since(d.began).Seconds())
	})
	return nil
}
