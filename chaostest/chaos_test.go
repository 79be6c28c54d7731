package chaostest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"

	"github.com/pgcoord/pgcoord/internal/chaos"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// The chaos test: several coordinators, many goroutines taking and releasing
// a few contended names, while faults are injected at random. Every critical
// section goes into a journal, and the checker (internal/chaos) fails the
// run on an overlap the contract does not allow or a fencing token out of
// order. It runs on a PostgreSQL server of its own, since it restarts it.
//
// TestChaosShort is part of `make test`. With PGCOORD_CHAOS_LONG=1 it runs
// a long budget instead (see chaosBudget).

// chaosLongEnv selects the long run.
const chaosLongEnv = "PGCOORD_CHAOS_LONG"

// chaosBudget sizes a run.
type chaosBudget struct {
	duration time.Duration // how long the workload and the faults run
	maxHolds int64         // the workload stops early at this many holds
	coords   int           // coordinators in this process
	workers  int           // goroutines per coordinator
	names    int           // contended lock names
	children int           // child processes holding locks (killed and frozen)
	// restartEvery is how many faults pass between two server restarts.
	restartEvery int
	// failoverEvery is how many faults pass between two failovers to the
	// standby (the first round has one).
	failoverEvery int
}

func chaosBudgetFromEnv() (chaosBudget, bool) {
	if os.Getenv(chaosLongEnv) == "1" {
		d := 3 * time.Minute
		if s := os.Getenv("PGCOORD_CHAOS_DURATION"); s != "" {
			if v, err := time.ParseDuration(s); err == nil {
				d = v
			}
		}
		return chaosBudget{duration: d, maxHolds: 1 << 40, coords: 5, workers: 4, names: 6, children: 3, restartEvery: 25, failoverEvery: 40}, true
	}
	// Short: bounded in time and in holds, on a 2-core machine shared with
	// the rest of the suite under -race.
	return chaosBudget{duration: 10 * time.Second, maxHolds: 4000, coords: 3, workers: 3, names: 4, children: 2, restartEvery: 12, failoverEvery: 1000}, false
}

const (
	chaosHB = 200 * time.Millisecond
	// chaosSessionTimeout is roomier than the default 5 heartbeats, as in
	// newCoord: the suite runs in parallel under -race on two cores.
	chaosSessionTimeout = 3 * time.Second
	// chaosSignalBound is how late after a session-killing fault a holder
	// may be told, and after waking from a freeze: two heartbeats, as SPEC
	// section 5 promises.
	chaosSignalBound = 2 * chaosHB
)

// sessionName names a server session in the journal, as faults name their
// victims.
func sessionName(pid int32) string { return "pid:" + strconv.Itoa(int(pid)) }

func TestChaosShort(t *testing.T) {
	t.Parallel()
	budget, long := chaosBudgetFromEnv()
	runChaos(t, budget, long)
}

func runChaos(t *testing.T, budget chaosBudget, long bool) {
	// A primary and a streaming standby: the failover fault promotes it.
	// (Or a Patroni stack: see chaosPatroniEnv.)
	db := startChaosDB(t)
	defer db.close()
	require.NoError(t, pgcoord.Migrate(ctx(t), db.url()))
	admin, err := pgxpool.New(context.Background(), db.url())
	require.NoError(t, err)
	defer func() { admin.Close() }() // the failover fault replaces it

	proxy := startChaosProxy(t, db.addr())
	defer proxy.close()
	u, err := url.Parse(db.url())
	require.NoError(t, err)
	u.Host = proxy.addr()
	proxied := u.String()

	var journal chaos.Journal
	var coords []*pgcoord.Coordinator
	var async []bool
	for i := range budget.coords {
		cfg := chaosConfig(proxied, fmt.Sprintf("chaos-%d", i))
		// Every other coordinator releases asynchronously: its unlocks
		// ride with later statements, and faults then hit unlocks still
		// queued, which must neither free a lock early nor leak one.
		cfg.AsyncRelease = i%2 == 1
		if i%3 == 2 {
			// A budget of two sessions: every wait is beyond the budget,
			// woken by NOTIFY or the dead-holder check.
			cfg.MaxSessions = 2
		}
		c, err := pgcoord.New(cfg)
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx(t)))
		coords = append(coords, c)
		async = append(async, cfg.AsyncRelease)
	}
	stopAll := sync.OnceFunc(func() {
		for _, c := range coords {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = c.Stop(sctx)
			cancel()
		}
	})
	defer stopAll()

	start := time.Now()
	runCtx, cancelRun := context.WithTimeout(context.Background(), budget.duration)
	defer cancelRun()
	var holds, acquireErrs, busy atomic.Int64
	var late sync.WaitGroup // sections of async releases, see chaosHold
	var members []string
	for _, c := range coords {
		members = append(members, c.MemberID())
	}
	go watchStalls(runCtx, func(from, to time.Time) {
		journal.Stall(chaos.Stall{Proc: "parent", Members: members, From: from, To: to})
	})

	var wg sync.WaitGroup
	for ci, c := range coords {
		for w := range budget.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(w)))
				var lateOf *sync.WaitGroup // see chaosHold
				if async[ci] {
					lateOf = &late
				}
				for runCtx.Err() == nil && holds.Load() < budget.maxHolds {
					name := "n" + strconv.Itoa(rng.IntN(budget.names))
					switch chaosStep(runCtx, c, name, rng, journalSink{&journal}, lateOf) {
					case holdDone:
						holds.Add(1)
					case holdBusy:
						busy.Add(1)
					case holdErr:
						acquireErrs.Add(1)
						// Faults make acquires fail at once (server down, a
						// reset): back off a little rather than spin.
						sleepCtx(runCtx, 20*time.Millisecond)
					}
				}
			}()
		}
	}

	children := &chaosChildren{t: t, url: proxied, names: budget.names, j: &journal}
	defer children.stopAll() // on a failure; a no-op after the normal stop
	for range budget.children {
		children.spawn()
	}

	// The fault injector. The first round has every kind once, in random
	// order, so that even a short run covers them all.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(42, 7))
		first := []string{"terminate", "reset", "latency", "blackhole", "restart", "failover"}
		if budget.children > 0 {
			first = append(first, "kill", "freeze")
		}
		rng.Shuffle(len(first), func(i, k int) { first[i], first[k] = first[k], first[i] })
		for n := 0; ; n++ {
			if !sleepCtx(runCtx, time.Duration(200+rng.IntN(500))*time.Millisecond) {
				return
			}
			var kind string
			switch {
			case n < len(first):
				kind = first[n]
			case n%budget.failoverEvery == 0:
				kind = "failover"
			case n%budget.restartEvery == 0:
				kind = "restart"
			default:
				kind = pickFault(rng, budget.children > 0)
			}
			if kind = db.kind(kind); kind == "failover" {
				admin = db.failover(t, admin, proxy, &journal)
				continue
			}
			injectFault(t, kind, rng, db.srv, admin, proxy, children, &journal)
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	// The partition ends: black-holed connections are severed, so that
	// nothing is left waiting on them (pgx drains a cancelled connection
	// for up to 15 s in a goroutine of its own, which a child's goleak
	// would report), and every child stops cleanly.
	proxy.setLatency(0)
	proxy.dropBlackholed()
	children.stopAll()
	late.Wait()

	// Stop every coordinator: all holds end, all sessions close. The
	// proxy stays up while the server is checked, so that a session
	// pgcoord forgot to close would still be there to count.
	stopAll()

	report := journal.Check(chaosSignalBound)
	var conns, locks int
	settled := func() bool {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err1 := admin.QueryRow(qctx,
			`SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgcoord:%'`).Scan(&conns)
		err2 := admin.QueryRow(qctx,
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`).Scan(&locks)
		return err1 == nil && err2 == nil && conns == 0 && locks == 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	proxy.close()
	var lost uint64
	for _, c := range coords {
		lost += c.Stats().Lost
	}
	lines := append(report.Lines(),
		fmt.Sprintf("in %v: %d coordinators × %d workers, %d names, %d child processes, HB %v, SessionTimeout %v, signal bound %v",
			elapsed.Round(time.Millisecond), budget.coords, budget.workers, budget.names, budget.children, chaosHB, chaosSessionTimeout, chaosSignalBound),
		fmt.Sprintf("busy=%d acquire-errors=%d lost(stats)=%d; after Stop: connections=%d advisory-locks=%d (goroutine leaks: TestMain goleak)",
			busy.Load(), acquireErrs.Load(), lost, conns, locks))
	lines = append(lines, stallSummary(journal.Stalls()))
	// say logs a line, and in a long run prints it too: make chaos shows
	// the summary, the worst signals' timelines, the late signals and the
	// overlaps excused only less stalls.
	say := func(format string, args ...any) {
		line := "chaos: " + fmt.Sprintf(format, args...)
		t.Log(line)
		if long {
			fmt.Println(line)
		}
	}
	for _, l := range lines {
		say("%s", l)
	}
	for _, k := range slices.Sorted(maps.Keys(report.WorstSignalSection)) {
		sec, at := report.WorstSignalSection[k], report.WorstSignalFault[k]
		say("worst %s signal: fault %s, %v", k, at.Format("15:04:05.000000"), sec)
		for _, st := range journal.Stalls() {
			if slices.Contains(st.Members, sec.Member) && st.To.After(at) && st.From.Before(sec.Told) {
				say("    stall of %s %s..%s (%v)", st.Proc, st.From.Format("15:04:05.000000"), st.To.Format("15:04:05.000000"), st.To.Sub(st.From).Round(time.Millisecond))
			}
		}
	}
	for _, v := range report.LateSamples {
		say("past the bound: %s", v)
	}
	for _, v := range report.ExcusedSamples {
		t.Log("excused overlap:", v)
	}
	for _, v := range report.StallSamples {
		say("excused only less stalls: %s", v)
	}
	for _, v := range report.Violations {
		t.Error(v)
	}
	if len(report.Violations) > 0 {
		// The faults, for reading a violation's timeline: which fault
		// came before the takeover, and whose session it hit.
		for _, f := range journal.Faults() {
			t.Logf("fault %s %s kills=%v victims=%v all=%v member=%s until=%s", f.At.Format("15:04:05.000000"), f.Kind,
				f.Kills, f.Victims, f.All, f.Member, f.Until.Format("15:04:05.000000"))
		}
		for _, s := range journal.Stalls() {
			t.Logf("stall %s %s..%s (%v)", s.Proc, s.From.Format("15:04:05.000000"), s.To.Format("15:04:05.000000"), s.To.Sub(s.From).Round(time.Millisecond))
		}
	}
	// The workers never hold while they wait: a cycle of waits among them
	// cannot exist, and ErrDeadlock would be a false one.
	require.Zero(t, deadlocks.Load(), "ErrDeadlock in a mix whose goroutines never hold while they wait")
	require.Zero(t, conns, "pgcoord sessions left on the server after Stop")
	require.Zero(t, locks, "advisory locks left on the server after Stop")
	require.Positive(t, report.Holds, "no critical section completed")
	require.Positive(t, report.Losses, "no fault ever cost a hold: the faults did not bite")
}

type holdOutcome int

const (
	holdDone holdOutcome = iota
	holdBusy
	holdErr
)

// sectionSink receives critical sections: in this process the journal,
// in a child process a pipe to the parent.
type sectionSink interface {
	// Enter is called when a section starts (a child reports it at once,
	// so a SIGKILL cannot hide a section from the parent).
	Enter(s chaos.Section)
	// Leaving is called once the section has its Exit, before the
	// release that ends the hold on the server (a child reports it at
	// once: killed after that release but before its Exit reached the
	// parent, the section would otherwise be taken to end at the kill,
	// later than its release, and overlap whoever took the lock next).
	Leaving(s chaos.Section)
	// Exit is called with the finished section.
	Exit(s chaos.Section)
}

// journalSink records finished sections in a journal.
type journalSink struct{ j *chaos.Journal }

func (journalSink) Enter(chaos.Section)    {}
func (journalSink) Leaving(chaos.Section)  {}
func (k journalSink) Exit(s chaos.Section) { k.j.Record(s) }

// deadlocks counts ErrDeadlock returned to this process's chaos workers:
// each is a failure (see noDeadlock).
var deadlocks atomic.Int64

// noDeadlock counts err if it is ErrDeadlock.
func noDeadlock(err error) error {
	if errors.Is(err, pgcoord.ErrDeadlock) {
		deadlocks.Add(1)
	}
	return err
}

// chaosHold takes name once with a random blocking mode, holds it briefly
// (now and then for a while, so that faults hit holders), and reports the
// section to sink. The holder watches Lost() throughout and stops at once
// when told, as a careful user would.
//
// Under AsyncRelease a loss that only the queued unlock finds closes Lost()
// after Release returned (see pgcoord.Config.AsyncRelease), so such a
// section is journaled in a goroutine tracked by late once Lost() closed or
// the signalling bound passed: a hold lost under it and never told is then
// an overlap the checker refuses. late is given for a coordinator with
// AsyncRelease and nil for one that releases synchronously, as the child
// processes' do (a section journaled after the fact would be lost with a
// SIGKILL).
func chaosHold(runCtx context.Context, c *pgcoord.Coordinator, name string, rng *rand.Rand, sink sectionSink, late *sync.WaitGroup) holdOutcome {
	return chaosHoldMode(runCtx, c, name, false, rng, sink, late)
}

// chaosHoldMode is chaosHold, taking the lock shared when shared is set.
func chaosHoldMode(runCtx context.Context, c *pgcoord.Coordinator, name string, shared bool, rng *rand.Rand, sink sectionSink, late *sync.WaitGroup) holdOutcome {
	l := c.GetLock(name)
	modes := []pgcoord.Blocking{pgcoord.NoWait, pgcoord.Timeout(time.Duration(50+rng.IntN(400)) * time.Millisecond), pgcoord.Wait}
	// Wait is bounded by its ctx: a wait cut off by a fault must not hang.
	actx, cancel := context.WithTimeout(runCtx, 2*time.Second)
	acquire := l.Acquire
	if shared {
		acquire = l.AcquireShared
	}
	ok, err := acquire(actx, modes[rng.IntN(len(modes))])
	cancel()
	noDeadlock(err)
	if err != nil {
		return holdErr
	}
	if !ok {
		return holdBusy
	}
	token, pid := l.Token(), l.BackendPID()
	if token == 0 {
		// Lost already, between Acquire's return and this look (as in
		// chaosLead and chaosSlot): journaled, its token 0 broke the
		// checker's token order (a fault's victim, told at once).
		_ = l.Release(context.Background())
		return holdErr
	}
	s := chaos.Section{Lock: name, Token: token, Member: c.MemberID(), Session: sessionName(pid), Enter: time.Now(), Shared: shared}
	lost := l.Lost()
	sink.Enter(s)
	d := time.Duration(rng.IntN(15)) * time.Millisecond
	if rng.IntN(10) == 0 {
		d = time.Duration(100+rng.IntN(500)) * time.Millisecond
	}
	hold := time.NewTimer(d)
	select {
	case <-lost:
		s.Told = time.Now()
		s.Exit = s.Told
		hold.Stop()
		sink.Leaving(s)
		if err := l.Release(context.Background()); err != nil {
			s.Cause = err.Error()
		}
	case <-hold.C:
		s.Exit = time.Now()
		sink.Leaving(s)
		err := l.Release(context.Background())
		if errors.Is(err, pgcoord.ErrLockLost) {
			// Lost before Release could say so: the loss was not seen
			// during the section, so Told is when Release reported it.
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

// pickFault chooses a fault kind, weighted towards the cheap ones.
func pickFault(rng *rand.Rand, children bool) string {
	r := rng.IntN(100)
	if children {
		switch {
		case r < 6:
			return "kill"
		case r < 12:
			return "freeze"
		}
	}
	switch {
	case r < 50:
		return "terminate"
	case r < 72:
		return "reset"
	case r < 90:
		return "latency"
	default:
		return "blackhole"
	}
}

// injectFault injects one fault and journals it. Failures of the fault
// itself (the admin pool hit by an earlier restart, say) are ignored: the
// fault is then simply not counted.
func injectFault(t *testing.T, kind string, rng *rand.Rand, srv *pgtemp.Server, admin *pgxpool.Pool,
	proxy *chaosProxy, children *chaosChildren, j *chaos.Journal) {
	qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch kind {
	case "terminate":
		// Mostly a session holding a lock (so the fault bites a holder),
		// else any pgcoord session: control, lock or wait.
		q := `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name LIKE 'pgcoord:%' ORDER BY random() LIMIT 1`
		if rng.IntN(3) > 0 {
			// objsubid 1: a one-bigint advisory key, a lock (the member
			// lock of a control session has two int keys).
			q = `SELECT pid, pg_terminate_backend(pid) FROM pg_locks
				WHERE locktype = 'advisory' AND granted AND objsubid = 1 ORDER BY random() LIMIT 1`
		}
		at := time.Now()
		var pid int32
		var killed bool
		err := admin.QueryRow(qctx, q).Scan(&pid, &killed)
		if err == nil && killed {
			j.AddFault(chaos.Fault{Kind: kind, At: at, Kills: true, Victims: []string{sessionName(pid)}})
		}
	case "reset":
		// The victims are the severed connections' backends, as their
		// BackendKeyData named them (see keySniffer).
		at := time.Now()
		if n, victims := proxy.reset(rng); n > 0 {
			j.AddFault(chaos.Fault{Kind: kind, At: at, Kills: true, Victims: victims})
		}
	case "latency":
		j.Fault(kind, time.Now())
		proxy.setLatency(time.Duration(5+rng.IntN(40)) * time.Millisecond)
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		proxy.setLatency(0)
	case "blackhole":
		at := time.Now()
		if proxy.blackhole(rng) > 0 {
			j.Fault(kind, at)
		}
	case "kill":
		// SIGKILL a child; a new one takes its place. Its open sections
		// end at the kill, so the fault excuses no overlap.
		if ch := children.pick(rng); ch != nil {
			at := ch.kill()
			j.AddFault(chaos.Fault{Kind: kind, At: at, Member: ch.member})
			children.replace(ch)
		}
	case "freeze":
		// SIGSTOP a child for up to a bit more than SessionTimeout, so
		// that its holds are sometimes taken over while it sleeps.
		if ch := children.pick(rng); ch != nil {
			at := time.Now()
			if ch.cmd.Process.Signal(syscall.SIGSTOP) == nil {
				time.Sleep(time.Duration(300+rng.IntN(3500)) * time.Millisecond)
				_ = ch.cmd.Process.Signal(syscall.SIGCONT)
				j.AddFault(chaos.Fault{Kind: kind, At: at, Member: ch.member, Until: time.Now()})
			}
		}
	case "restart":
		at := time.Now()
		if err := srv.Restart(); err != nil {
			t.Errorf("restarting the chaos server: %v", err)
			return
		}
		j.AddFault(chaos.Fault{Kind: kind, At: at, Kills: true, All: true})
	}
}

// chaosChildren is the set of live chaos child processes.
type chaosChildren struct {
	t     *testing.T
	url   string
	names int
	j     *chaos.Journal

	mu   sync.Mutex
	live []*chaosChild
	dead []*chaosChild
	gen  int
}

func (cs *chaosChildren) spawn() {
	cs.mu.Lock()
	cs.gen++
	agent := fmt.Sprintf("chaos-child-%d", cs.gen)
	cs.mu.Unlock()
	ch := startChaosChild(cs.t, agent, cs.url, cs.names, cs.j)
	cs.mu.Lock()
	cs.live = append(cs.live, ch)
	cs.mu.Unlock()
}

func (cs *chaosChildren) pick(rng *rand.Rand) *chaosChild {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.live) == 0 {
		return nil
	}
	return cs.live[rng.IntN(len(cs.live))]
}

// replace retires a killed child and starts another.
func (cs *chaosChildren) replace(ch *chaosChild) {
	cs.mu.Lock()
	for i, c := range cs.live {
		if c == ch {
			cs.live = append(cs.live[:i], cs.live[i+1:]...)
			break
		}
	}
	cs.dead = append(cs.dead, ch)
	cs.mu.Unlock()
	cs.spawn()
}

// stopAll ends every child and waits until their journals are complete.
func (cs *chaosChildren) stopAll() {
	cs.mu.Lock()
	live, dead := cs.live, cs.dead
	cs.live, cs.dead = nil, nil
	cs.mu.Unlock()
	for _, ch := range live {
		ch.stop(cs.t)
	}
	for _, ch := range dead {
		<-ch.done
	}
}

// sleepCtx sleeps for d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// chaosConfig is the configuration of every chaos coordinator, in this
// process or a child: short heartbeats and quick reconnects, so faults show.
func chaosConfig(connString, agent string) pgcoord.Config {
	return pgcoord.Config{
		ConnString:              connString,
		AgentID:                 agent,
		HeartbeatInterval:       chaosHB,
		SessionTimeout:          chaosSessionTimeout,
		InitialReconnectBackoff: 20 * time.Millisecond,
		MaxReconnectBackoff:     500 * time.Millisecond,
		SkipMigrations:          true,
		Logger:                  quietLogger(),
	}
}
