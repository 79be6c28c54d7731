package hatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/chaos"
	"github.com/pgcoord/pgcoord/internal/hastack"
)

// TestHA runs the Patroni cases on a two-node stack with Patroni's ttl at
// 10s, then the cases that wait out the ttl (a leader's death, a leader
// cut off from etcd) with Patroni's default ttl of 30s.
func TestHA(t *testing.T) {
	needHA(t)
	t.Run("ttl=10s", func(t *testing.T) {
		h := startHA(t, hastack.Options{TTL: 10 * time.Second})
		t.Run("switchover", h.switchover)
		t.Run("failover", h.failover)
		t.Run("rejoin", h.rejoin)
		t.Run("etcd-cutoff", h.cutoff)
		t.Run("patroni-killed", h.patroniKilled)
	})
	t.Run("ttl=30s", func(t *testing.T) {
		h := startHA(t, hastack.Options{TTL: 30 * time.Second})
		t.Run("failover", h.failover)
		t.Run("rejoin", h.rejoin)
		t.Run("etcd-cutoff", h.cutoff)
	})
}

// ha is one stack and what its cases share.
type ha struct {
	st     *hastack.Stack
	w      *watcher
	ttl    time.Duration
	killed *hastack.Node // the node the failover killed, for rejoin
}

func startHA(t *testing.T, opts hastack.Options) *ha {
	opts.Logf = t.Logf
	st, err := hastack.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	o := st.Options()
	report(t, "stack: %d nodes, Patroni ttl %v, loop_wait %v, retry_timeout %v, maximum_lag_on_failover %d, synchronous_mode %t; HAProxy checks /primary every %v (fall 2, rise 1)",
		o.Nodes, o.TTL, o.LoopWait, o.RetryTimeout, o.MaximumLagOnFailover, o.SynchronousMode, o.CheckInterval)
	require.NoError(t, pgcoord.Migrate(ctx(t), st.HAProxyURL()))
	w := watch(st)
	t.Cleanup(w.stop)
	return &ha{st: st, w: w, ttl: o.TTL}
}

// outcome is what a case expects of a route.
type outcome struct {
	// lost: every hold on the old primary is lost and signalled.
	lost bool
	// follows: the first acquire after the fault is on the new leader.
	follows bool
	// overlapsAllowed: the checker may find overlaps (two primaries).
	overlapsAllowed bool
}

// caseRun is one fault, seen through both routes at once.
type caseRun struct {
	name   string
	old    *hastack.Node
	fault  time.Time
	routes []*route
	all    chaos.Journal // both routes' sections: overlaps across routes
}

// run holds locks on the current leader through both routes, runs the
// workload, injects the fault (which returns the new leader, or nil to
// wait for one), and checks and reports what each route saw.
func (h *ha) run(t *testing.T, name string, want map[string]outcome, fault func(t *testing.T, old *hastack.Node) *hastack.Node) {
	c := &caseRun{name: name}
	var err error
	c.old, err = h.st.WaitLeader(ctx(t), nil)
	require.NoError(t, err)
	require.NoError(t, h.st.WaitReplicas(ctx(t)))
	prefix := fmt.Sprintf("%s/%s/", h.ttl, name)
	c.routes = []*route{
		newRoute(t, "haproxy", h.st.HAProxyURL(), prefix, 2),
		newRoute(t, "multihost", h.st.MultiHostURL("&target_session_attrs=read-write"), prefix, 2),
	}
	for _, r := range c.routes {
		r.hold(t)
	}

	runCtx, stopWork := context.WithCancel(context.Background())
	var work, losses sync.WaitGroup
	defer func() {
		stopWork()
		work.Wait()
		losses.Wait()
	}()
	for _, r := range c.routes {
		r.work(runCtx, &work, &c.all)
		r.watchLosses(runCtx, &losses)
	}
	sleep(runCtx, 1500*time.Millisecond)

	c.fault = time.Now()
	var firsts sync.WaitGroup
	firstCtx, cancelFirst := context.WithTimeout(context.Background(), h.ttl+90*time.Second)
	defer cancelFirst()
	for _, r := range c.routes {
		firsts.Go(func() { r.acquireFirst(firstCtx) })
	}
	newLeader := fault(t, c.old)
	if newLeader == nil {
		newLeader, err = h.st.WaitLeader(ctx(t), c.old)
		require.NoError(t, err)
	}
	// The first acquires come soon after the new leader takes writes,
	// or never (a route that stays on the old primary).
	writableCtx, cancelWait := context.WithTimeout(ctx(t), 30*time.Second)
	for h.w.first(newLeader, "primary", c.fault).IsZero() && writableCtx.Err() == nil {
		sleep(writableCtx, watchEvery)
	}
	cancelWait()
	giveUp := time.AfterFunc(20*time.Second, cancelFirst)
	firsts.Wait()
	giveUp.Stop()
	// The workload goes on for a while on the new leader, then stops.
	sleep(runCtx, 2*time.Second)
	stopWork()
	work.Wait()

	oldDown := h.w.firstNot(c.old, "primary", c.fault)
	writable := h.w.first(newLeader, "primary", c.fault)
	at := oldDown
	if at.IsZero() {
		at = c.fault
	}
	report(t, "%s %s: %s leads -> %s; old primary stops serving %s, new leader writable %s (both after the fault); two primaries at once for %v",
		h.ttl, name, c.old.Name(), newLeader.Name(), since(c.fault, oldDown), since(c.fault, writable),
		h.w.twoPrimaries(c.fault, time.Now()).Round(time.Millisecond))
	for _, r := range c.routes {
		h.check(t, c, r, newLeader, want[r.name], writable, at)
	}
	// Across routes: both reach one leader, so a hold through one and a
	// hold through the other never overlap, unless there are two.
	c.all.AddFault(chaos.Fault{Kind: name, At: at, Kills: true, All: true})
	rep := c.all.Check(2 * workHB)
	report(t, "%s %s both routes together: checker %s", h.ttl, name, strings.Join(rep.Lines()[:2], "; "))
	if !want["haproxy"].overlapsAllowed && !want["multihost"].overlapsAllowed {
		for _, v := range rep.Violations {
			t.Error("across routes: " + v)
		}
	} else {
		for i, v := range rep.Violations {
			if i < 3 {
				report(t, "%s %s overlap across routes: %s", h.ttl, name, v)
			}
		}
	}
	require.Empty(t, h.w.replicaLocks(), "a pgcoord lock on a node in recovery")
}

// check asserts and reports what one route saw.
func (h *ha) check(t *testing.T, c *caseRun, r *route, newLeader *hastack.Node, want outcome, writable, down time.Time) {
	r.journal.AddFault(chaos.Fault{Kind: c.name, At: down, Kills: true, All: true})
	rep := r.journal.Check(2 * workHB)
	lost, worst := 0, time.Duration(0)
	for _, hl := range r.held {
		if !hl.told.IsZero() {
			lost++
			worst = max(worst, hl.told.Sub(down))
		}
	}
	before := r.maxTokenBefore(c.fault)
	lag := "-"
	if !r.first.IsZero() && !writable.IsZero() {
		lag = ms(r.first.Sub(writable))
	}
	last := "<nil>"
	if r.lastRefusal != nil {
		last = strings.Join(strings.Fields(r.lastRefusal.Error()), " ") // one line
	}
	report(t, "%s %s via %s: first acquire on the new leader %s after the fault, %s after it took writes (any server: %s; %d refused before; last: %s); holds lost %d/%d, told within %v of the old primary stopping; first token after %d, largest before %d; checker: holds=%d overlaps=%d excused=%d",
		h.ttl, c.name, r.name, since(c.fault, r.first), lag, since(c.fault, r.firstAny), r.refusals, last, lost, len(r.held), worst.Round(time.Millisecond),
		r.firstToken, before, rep.Holds, len(rep.Violations), rep.Excused)
	if want.lost {
		require.Equal(t, len(r.held), lost, "%s: every hold on the old primary is lost and signalled", r.name)
		for _, hl := range r.held {
			require.ErrorIs(t, hl.l.Release(ctx(t)), pgcoord.ErrLockLost)
		}
	}
	if want.follows && !writable.IsZero() && (r.first.IsZero() || r.first.Sub(writable) > time.Second) {
		h.timeline(t, c, r)
	}
	if want.follows {
		require.False(t, r.first.IsZero(), "%s: no acquire succeeded on the new leader (first refusal: %v, last: %v)", r.name, r.firstRefusal, r.lastRefusal)
		require.Greater(t, r.firstToken, before, "%s: the first token after the fault exceeds every token before it", r.name)
		require.True(t, r.first.After(writable), "%s: the first acquire came after the new leader took writes", r.name)
		// The goal of issue 21: the first acquire within a second of the
		// new leader taking writes; through HAProxy, HAProxy's own checks
		// aside: up to fall + rise = 3 check intervals before it routes
		// to the new leader (the old node out after two failed checks,
		// the new one in after one good one).
		ready := writable
		if r.name == "haproxy" {
			ready = ready.Add(3 * h.st.Options().CheckInterval)
		}
		// Not fatal: the other route's figures are still worth printing.
		assert.Less(t, r.first.Sub(ready), time.Second, "%s: the first acquire within 1s of the new leader taking writes (through HAProxy: 1s + 3 check intervals)", r.name)
		if low := r.minTokenAfter(r.first); low != 0 {
			require.Greater(t, low, before, "%s: tokens after the failover exceed every token before it", r.name)
		}
		live := false
		require.Eventually(t, func() bool {
			conn, err := pgx.Connect(ctx(t), newLeader.URL())
			if err != nil {
				return false
			}
			defer conn.Close(context.Background())
			err = conn.QueryRow(ctx(t), `SELECT EXISTS (SELECT 1 FROM pgcoord.live_members WHERE member_id = $1)`, r.measure.MemberID()).Scan(&live)
			return err == nil && live
		}, 30*time.Second, 50*time.Millisecond, "%s: the member row is live on the new leader", r.name)
	}
	if !want.overlapsAllowed {
		for _, v := range rep.Violations {
			t.Errorf("%s: %s", r.name, v)
		}
	}
}

// timelineMax bounds the lines of a timeline: its first timelineHead and
// its last ones.
const timelineMax, timelineHead = 80, 20

// timeline prints a route's case from a second before the fault to its
// first acquire on the new leader (or now, when none came), times after the
// fault: the nodes' states and HAProxy's view as the watcher saw them, and
// the measuring coordinator's log with the test's own acquire notes. check
// prints it when the first acquire came more than a second after the new
// leader took writes, so that a slow case shows where the time went.
func (h *ha) timeline(t *testing.T, c *caseRun, r *route) {
	from, to := c.fault.Add(-time.Second), r.first
	if to.IsZero() {
		to = time.Now()
	}
	evs := append(h.w.events(from, to), r.log.events(from, to)...)
	slices.SortStableFunc(evs, func(a, b event) int { return a.at.Compare(b.at) })
	prefix := fmt.Sprintf("%s %s via %s: timeline:", h.ttl, c.name, r.name)
	report(t, "%s %d lines, from 1s before the fault to the first acquire on the new leader (times after the fault; the watcher looks at each node every %v, at HAProxy every %v)",
		prefix, len(evs), watchEvery, proxyEvery)
	for i, e := range evs {
		if len(evs) > timelineMax && i >= timelineHead && i < len(evs)-(timelineMax-timelineHead) {
			if i == timelineHead {
				report(t, "%s ... %d lines left out", prefix, len(evs)-timelineMax)
			}
			continue
		}
		report(t, "%s %s %s", prefix, ms(e.at.Sub(c.fault)), e.what)
	}
}

// since formats t relative to from, "never" for a zero t.
func since(from, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return ms(t.Sub(from))
}

// everyRoute is the outcome where both routes lose their holds and follow.
var everyRoute = map[string]outcome{
	"haproxy":   {lost: true, follows: true},
	"multihost": {lost: true, follows: true},
}

// switchover: patronictl switchover --force to the replica.
func (h *ha) switchover(t *testing.T) {
	h.run(t, "switchover", everyRoute, func(t *testing.T, old *hastack.Node) *hastack.Node {
		candidate := h.other(old)
		require.NoError(t, h.st.Switchover(ctx(t), old, candidate))
		return candidate
	})
}

// failover: the leader node dies, its Patroni and its postgres killed -9.
func (h *ha) failover(t *testing.T) {
	h.run(t, "failover", everyRoute, func(t *testing.T, old *hastack.Node) *hastack.Node {
		require.NoError(t, old.Kill())
		h.killed = old
		return nil
	})
}

// rejoin: the node the failover killed comes back (Patroni started
// again: pg_rewind if its history diverged, then a replica of the new
// leader), and a switchover makes it the leader again.
func (h *ha) rejoin(t *testing.T) {
	require.NotNil(t, h.killed, "rejoin follows failover")
	began := time.Now()
	require.NoError(t, h.killed.StartPatroni())
	// Its Patroni log (PostgreSQL's lines too) says why when it does not
	// come back; make ha also keeps the whole log (hastack.LogsEnv).
	require.NoError(t, h.st.WaitReplicas(ctx(t)), "%s's Patroni log ends:\n%s", h.killed.Name(), h.killed.PatroniLog(40))
	require.Equal(t, "replica", h.killed.Role(ctx(t)))
	rewound := strings.Contains(h.killed.PatroniLog(1000), "running pg_rewind")
	report(t, "%s rejoin: %s back as a replica %v after its Patroni started (pg_rewind run: %t)", h.ttl, h.killed.Name(), time.Since(began).Round(time.Millisecond), rewound)
	h.run(t, "rejoin", everyRoute, func(t *testing.T, old *hastack.Node) *hastack.Node {
		require.NoError(t, h.st.Switchover(ctx(t), old, h.killed))
		return h.killed
	})
	h.killed = nil
}

// cutoff: the leader is cut off from etcd; it demotes itself after
// retry_timeout, and the other node takes over once the leader key
// expires (ttl). Then the partition heals and it rejoins.
func (h *ha) cutoff(t *testing.T) {
	var cut *hastack.Node
	defer func() {
		if cut != nil {
			cut.CutEtcd(false)
			require.NoError(t, h.st.WaitReplicas(ctx(t)))
		}
	}()
	h.run(t, "etcd-cutoff", everyRoute, func(t *testing.T, old *hastack.Node) *hastack.Node {
		old.CutEtcd(true)
		cut = old
		return nil
	})
}

// patroniKilled: the leader's Patroni alone is killed -9. Its postgres
// runs on as a primary (no watchdog fences it) and, once the leader key
// expires, the other node is promoted beside it: two primaries. HAProxy
// stops routing to the old one as soon as its REST API stops answering
// (and shuts its sessions down); a multi-host string keeps whatever
// primary it finds first. The case measures what pgcoord then sees; the
// overlaps across routes are the split brain no client can prevent.
func (h *ha) patroniKilled(t *testing.T) {
	var old *hastack.Node
	defer func() {
		if old == nil {
			return
		}
		// The old primary took writes after the new leader's promotion
		// (the multi-host route's heartbeats at least): its history
		// diverged, and only pg_rewind brings it back as a replica.
		require.NoError(t, old.StopPostgres())
		began := time.Now()
		require.NoError(t, old.StartPatroni())
		require.NoError(t, h.st.WaitReplicas(ctx(t)))
		require.Equal(t, "replica", old.Role(ctx(t)))
		report(t, "%s patroni-killed: %s, its postgres stopped and its Patroni started again, back as a replica %v later (pg_rewind run: %t)",
			h.ttl, old.Name(), time.Since(began).Round(time.Millisecond), strings.Contains(old.PatroniLog(1000), "running pg_rewind"))
	}()
	h.run(t, "patroni-killed", map[string]outcome{
		"haproxy":   {lost: true, follows: true},
		"multihost": {overlapsAllowed: true},
	}, func(t *testing.T, leader *hastack.Node) *hastack.Node {
		leader.KillPatroni()
		old = leader
		return nil
	})
}

// other is a node other than n.
func (h *ha) other(n *hastack.Node) *hastack.Node {
	for _, o := range h.st.Nodes() {
		if o != n {
			return o
		}
	}
	panic(errors.New("hatest: a stack of one node"))
}
