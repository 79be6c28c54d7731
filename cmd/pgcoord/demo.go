package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/db"
)

// demoStyle fits the demo's tables in a terminal.
var demoStyle = tableStyle{timeLayout: "15:04:05.000", indent: "  "}

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

const (
	// demoPause is an agent's think time between two operations, which
	// gives the others a chance at the volume it just released.
	demoPause = 25 * time.Millisecond
	// crashVol is the volume agent-c holds when it is killed.
	crashVol = "vol-2"
	// staleAfter is how long after the kill the members are shown: five
	// heartbeats, so the dead member's age stands out.
	staleAfter = time.Second
)

const demoDescription = `The showcase of pgcoord: three agents (agent-a and agent-b in this process,
agent-c in a child process) perform Cinder-like volume operations under
pgcoord.Synchronize("{f_name}-{vol.id}", ...), with a timeline of who waits for,
holds and releases which lock; the members and held locks tables; then agent-c
is killed (SIGKILL) while it holds a lock and leads the "scheduler" election:
agent-a takes the lock over, agent-b becomes leader with a larger term token,
and agent-c's member row goes stale. Needs about 3 seconds, plus starting a
throwaway PostgreSQL when no database is given. Uses the prefix "demo/".`

// cmdDemo implements "pgcoord demo".
func cmdDemo(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord demo [--database-url URL]", demoDescription)
	dbURL := fs.String("database-url", "", "PostgreSQL `URL` (default $DATABASE_URL; when neither is set, a throwaway server)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if code, done := a.noArgs(fs); done {
		return code
	}
	began := time.Now()
	url, err := a.demoDatabase(*dbURL)
	if err != nil {
		return a.fail(err)
	}
	d := &demo{url: url, w: a.stdout, began: began}
	if err := d.run(a.ctx); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// demo is one run of the showcase.
type demo struct {
	url   string
	w     io.Writer
	began time.Time

	tl *timeline
	// obs is the demo's own connection, for the tables.
	obs    *pgx.Conn
	agentA *localAgent
	agentB *localAgent
	agentC *remoteAgent
}

func (d *demo) run(ctx context.Context) (err error) {
	if err := pgcoord.Migrate(ctx, d.url); err != nil {
		return err
	}
	if d.obs, err = connect(ctx, d.url, "pgcoord-demo"); err != nil {
		return err
	}
	defer closeConn(d.obs)

	d.tl = newTimeline(d.w)
	defer d.tl.close()
	if err := d.startAgents(ctx); err != nil {
		return err
	}
	defer d.stopAgents()

	d.tl.printBlock(func(w io.Writer) { d.intro(w) })

	snap, err := d.sceneOperations(ctx)
	if err != nil {
		return err
	}
	if err := d.sceneTables(ctx, snap); err != nil {
		return err
	}
	killedAt, err := d.sceneCrash(ctx)
	if err != nil {
		return err
	}
	if err := d.sceneStale(ctx, killedAt); err != nil {
		return err
	}
	return d.sceneSummary()
}

func (d *demo) intro(w io.Writer) {
	fmt.Fprintf(w, `pgcoord demo
============

Three agents perform Cinder-like operations on three shared volumes. Every
operation goes through one method wrapped like this:

    volume := pgcoord.Synchronize("{f_name}-{vol.id}", m.volume,
        pgcoord.WithCoordinator(c))

f_name is the wrapped function's name, "volume", so each volume has one lock
("volume-vol-1") and the operations on it take turns, whichever agent runs them.
agent-a and agent-b run in this process (pid %d); agent-c runs in its own
process (pid %d), so that it can really crash later on. Names carry the
prefix %q.
`, os.Getpid(), d.agentC.pid, demoPrefix)
}

func (d *demo) startAgents(ctx context.Context) error {
	// agent-c's process starts while the other two connect.
	type started struct {
		r   *remoteAgent
		err error
	}
	ch := make(chan started, 1)
	go func() {
		r, err := startRemoteAgent(ctx, d.url, "agent-c", d.tl)
		ch <- started{r, err}
	}()
	var errs []error
	var err error
	if d.agentA, err = startLocalAgent(ctx, d.url, "agent-a", d.tl); err != nil {
		errs = append(errs, err)
	}
	if d.agentB, err = startLocalAgent(ctx, d.url, "agent-b", d.tl); err != nil {
		errs = append(errs, err)
	}
	s := <-ch
	d.agentC = s.r
	if s.err != nil {
		errs = append(errs, s.err)
	}
	if len(errs) > 0 {
		d.stopAgents()
		return errors.Join(errs...)
	}
	return nil
}

// stopAgents stops whatever agents are running; it may be called twice.
func (d *demo) stopAgents() {
	var wg sync.WaitGroup
	for _, a := range []*localAgent{d.agentA, d.agentB} {
		if a != nil {
			wg.Go(func() { _ = a.stop() })
		}
	}
	if d.agentC != nil {
		wg.Go(d.agentC.stop)
	}
	wg.Wait()
}

func (d *demo) heading(title string) {
	d.tl.printBlock(func(w io.Writer) {
		fmt.Fprintf(w, "\n== %s %s\n\n", title, strings.Repeat("=", max(3, 72-len(title))))
	})
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

// demoHeldLocks is held_locks restricted to the demo's names and members.
func demoHeldLocks(ctx context.Context, conn *pgx.Conn) ([]db.ListHeldLocksRow, error) {
	rows, err := queries.ListHeldLocks(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("listing held locks: %w", err)
	}
	var out []db.ListHeldLocksRow
	for _, r := range rows {
		if strings.HasPrefix(r.Name, demoPrefix) || strings.HasPrefix(r.MemberID, demoPrefix) {
			out = append(out, r)
		}
	}
	return out, nil
}

// demoMembers is pgcoord.members restricted to the demo's members, and the
// server's clock.
func demoMembers(ctx context.Context, conn *pgx.Conn) ([]db.ListMembersRow, time.Time, error) {
	rows, err := queries.ListMembers(ctx, conn)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("listing members: %w", err)
	}
	now, err := serverNow(ctx, conn)
	if err != nil {
		return nil, time.Time{}, err
	}
	var out []db.ListMembersRow
	for _, r := range rows {
		if r.Prefix == demoPrefix {
			out = append(out, r)
		}
	}
	return out, now, nil
}

// sleepCtx sleeps for d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
