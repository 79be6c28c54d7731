package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petermattis/goid"
	"github.com/stretchr/testify/require"
)

// cycleStep is one member's part in a cycle of waits: it takes what it
// holds, then waits for what the next step holds.
type cycleStep struct {
	member *Coordinator
	hold   func(ctx context.Context) error
	// wait waits for the next step's holding (15 s at most: without
	// detection the cycle lasts that long).
	wait func(ctx context.Context) (bool, error)
	// release gives back what the step holds (got: and what it waited for).
	release func(got bool)
}

// lockStep holds held and waits for want, in the given modes.
func lockStep(c *Coordinator, held string, heldShared bool, want string, wantShared bool) cycleStep {
	h, w := c.GetLock(held), c.GetLock(want)
	acquire := func(l *Lock, shared bool, b Blocking, ctx context.Context) (bool, error) {
		if shared {
			return l.AcquireShared(ctx, b)
		}
		return l.Acquire(ctx, b)
	}
	return cycleStep{
		member: c,
		hold: func(ctx context.Context) error {
			ok, err := acquire(h, heldShared, NoWait, ctx)
			if err == nil && !ok {
				err = fmt.Errorf("%q busy", held)
			}
			return err
		},
		wait: func(ctx context.Context) (bool, error) { return acquire(w, wantShared, Timeout(15*time.Second), ctx) },
		release: func(got bool) {
			if got {
				_ = w.Release(context.Background())
			}
			_ = h.Release(context.Background())
		},
	}
}

type stepResult struct {
	step int
	ok   bool
	err  error
	// began and ended: the wait's start and end.
	began, ended time.Time
}

// runCycle plays steps, each in its own goroutine: all take their holds,
// then start waiting one after the other, gap apart (so the last is the
// youngest wait). With spawn, each step's goroutine waits in a goroutine it
// starts, and waits for it (the shape of a test that holds x and starts a
// goroutine to take y). A step whose wait fails releases its holds at once,
// as a caller told ErrDeadlock would, and the others can then proceed.
func runCycle(t *testing.T, steps []cycleStep, spawn bool, gap time.Duration) []stepResult {
	t.Helper()
	held := make(chan error, len(steps))
	start := make([]chan struct{}, len(steps))
	out := make(chan stepResult, len(steps))
	for i, st := range steps {
		start[i] = make(chan struct{})
		go func() {
			if err := st.hold(ctx(t)); err != nil {
				held <- err
				return
			}
			held <- nil
			<-start[i]
			var r stepResult
			wait := func() {
				r.began = time.Now()
				r.ok, r.err = st.wait(ctx(t))
				r.ended = time.Now()
			}
			if spawn {
				done := make(chan struct{})
				go func() { defer close(done); wait() }()
				<-done
			} else {
				wait()
			}
			r.step = i
			st.release(r.ok)
			out <- r
		}()
	}
	for range steps {
		require.NoError(t, <-held)
	}
	for i := range steps {
		close(start[i])
		if i < len(steps)-1 {
			time.Sleep(gap)
		}
	}
	results := make([]stepResult, len(steps))
	for range steps {
		r := <-out
		results[r.step] = r
	}
	return results
}

// requireOneVictim requires that the youngest wait (the last step's) got
// ErrDeadlock within 2 s of its start (the cycle's closing), naming every
// member and wantNames, and that every other wait got its lock.
func requireOneVictim(t *testing.T, steps []cycleStep, results []stepResult, wantNames ...string) {
	t.Helper()
	last := len(results) - 1
	for i, r := range results {
		if i == last {
			continue
		}
		require.NoError(t, r.err, "step %d", i)
		require.True(t, r.ok, "step %d proceeds once the victim let go", i)
	}
	v := results[last]
	require.ErrorIs(t, v.err, ErrDeadlock, "the youngest wait is the victim")
	took := v.ended.Sub(v.began)
	t.Logf("broken %v after the cycle closed: %v", took.Round(time.Millisecond), v.err)
	require.Less(t, took, 2*time.Second, "broken within 2 s")
	for _, st := range steps {
		require.Contains(t, v.err.Error(), "member "+st.member.MemberID())
	}
	for _, n := range wantNames {
		require.Contains(t, v.err.Error(), n)
	}
}

func TestDeadlockTwoMembers(t *testing.T) {
	t.Parallel()
	for _, spawn := range []bool{false, true} {
		t.Run(fmt.Sprintf("spawned=%v", spawn), func(t *testing.T) {
			t.Parallel()
			p := testPrefix(t)
			a, b := newCoord(t, p), newCoord(t, p)
			steps := []cycleStep{
				lockStep(a, "x", false, "y", false),
				lockStep(b, "y", false, "x", false),
			}
			res := runCycle(t, steps, spawn, 200*time.Millisecond)
			requireOneVictim(t, steps, res, fmt.Sprintf("%q", p+"x"), fmt.Sprintf("%q", p+"y"))
		})
	}
}

func TestDeadlockRingOfThree(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b, c := newCoord(t, p), newCoord(t, p), newCoord(t, p)
	steps := []cycleStep{
		lockStep(a, "x", false, "y", false),
		lockStep(b, "y", false, "z", false),
		lockStep(c, "z", false, "x", false),
	}
	res := runCycle(t, steps, false, 200*time.Millisecond)
	requireOneVictim(t, steps, res, fmt.Sprintf("%q", p+"x"), fmt.Sprintf("%q", p+"y"), fmt.Sprintf("%q", p+"z"))
}

// TestDeadlockSharedExclusive: two readers each wait to write what the
// other reads.
func TestDeadlockSharedExclusive(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	steps := []cycleStep{
		lockStep(a, "x", true, "y", false),
		lockStep(b, "y", true, "x", false),
	}
	res := runCycle(t, steps, false, 200*time.Millisecond)
	requireOneVictim(t, steps, res)
}

// TestDeadlockBeyondBudget: with MaxSessions 2 every wait is beyond the
// budget, on no backend: the server cannot see them at all.
func TestDeadlockBeyondBudget(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	two := func(cfg *Config) { cfg.MaxSessions = 2 }
	a, b := newCoord(t, p, two), newCoord(t, p, two)
	steps := []cycleStep{
		lockStep(a, "x", false, "y", false),
		lockStep(b, "y", false, "x", false),
	}
	res := runCycle(t, steps, true, 200*time.Millisecond)
	requireOneVictim(t, steps, res)
	require.NotZero(t, a.Stats().WaitsBeyondBudget+b.Stats().WaitsBeyondBudget, "the waits were beyond the budget")
}

// TestDeadlockElectionAndSemaphore: a leader waits for a lock whose holder
// waits for a semaphore (limit 1) whose holder campaigns for that
// election.
func TestDeadlockElectionAndSemaphore(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b, c := newCoord(t, p), newCoord(t, p), newCoord(t, p)
	ea, ec := a.Election("e"), c.Election("e")
	xa, xb := a.GetLock("x"), b.GetLock("x")
	sb, sc := b.Semaphore("s", 1), c.Semaphore("s", 1)
	steps := []cycleStep{
		{member: a,
			hold: func(ctx context.Context) error { return ea.Campaign(ctx, "a") },
			wait: func(ctx context.Context) (bool, error) { return xa.Acquire(ctx, Timeout(15*time.Second)) },
			release: func(got bool) {
				if got {
					_ = xa.Release(context.Background())
				}
				_ = ea.Resign(context.Background())
			}},
		{member: b,
			hold: func(ctx context.Context) error { return acquired(xb.Acquire(ctx, NoWait)) },
			wait: func(ctx context.Context) (bool, error) { return sb.Acquire(ctx, Timeout(15*time.Second)) },
			release: func(got bool) {
				if got {
					_ = sb.Release(context.Background())
				}
				_ = xb.Release(context.Background())
			}},
		{member: c,
			hold: func(ctx context.Context) error { return acquired(sc.Acquire(ctx, NoWait)) },
			wait: func(ctx context.Context) (bool, error) {
				ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
				err := ec.Campaign(ctx, "c")
				return err == nil, err
			},
			release: func(got bool) {
				if got {
					_ = ec.Resign(context.Background())
				}
				_ = sc.Release(context.Background())
			}},
	}
	res := runCycle(t, steps, false, 200*time.Millisecond)
	requireOneVictim(t, steps, res, fmt.Sprintf("election %q", p+"e"), fmt.Sprintf("semaphore %q", p+"s"))
}

func acquired(ok bool, err error) error {
	if err == nil && !ok {
		err = errors.New("busy")
	}
	return err
}

// TestDeadlockLongWaitIsNot: a wait that is merely long (its holder works
// for 3 s) is no deadlock, even when its waiter holds what... nobody
// waits for; and goroutines of two members that wait for each other's
// working goroutines (a cycle at the level of members, not of waits) are
// none either: they return normally and write no row once done.
func TestDeadlockLongWaitIsNot(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)

	// Member A's goroutine 1 holds n1 and works; A's goroutine 2 waits for
	// n2, which B's goroutine 1 holds while it works; B's goroutine 2 waits
	// for n1.
	hold := func(c *Coordinator, name string, d time.Duration, took chan<- struct{}) {
		l := c.GetLock(name)
		mustAcquire(t, l, NoWait)
		took <- struct{}{}
		time.Sleep(d)
		require.NoError(t, l.Release(context.Background()))
	}
	took := make(chan struct{}, 2)
	var wg sync.WaitGroup
	wg.Go(func() { hold(a, "n1", 3*time.Second, took) })
	wg.Go(func() { hold(b, "n2", 3*time.Second, took) })
	<-took
	<-took
	errs := make(chan error, 2)
	waitFor := func(c *Coordinator, heldName, name string) {
		h := c.GetLock(heldName)
		mustAcquire(t, h, NoWait)
		defer func() { _ = h.Release(context.Background()) }()
		l := c.GetLock(name)
		ok, err := l.Acquire(ctx(t), Timeout(10*time.Second))
		if err == nil && !ok {
			err = errors.New("timed out")
		}
		if ok {
			_ = l.Release(context.Background())
		}
		errs <- err
	}
	wg.Go(func() { waitFor(a, "a-own", "n2") })
	wg.Go(func() { waitFor(b, "b-own", "n1") })
	wg.Wait()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Eventually(t, func() bool { return longWaitRows(t, a, b) == 0 }, 5*time.Second, 20*time.Millisecond,
		"the long waits' rows go when they end")
}

// longWaitRows counts the rows of cs in pgcoord.long_waits.
func longWaitRows(t testing.TB, cs ...*Coordinator) int {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.MemberID())
	}
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.long_waits WHERE member_id = ANY($1)`, ids).Scan(&n))
	return n
}

// TestDeadlockChaosMix: several members, several goroutines each, each
// holding one name at a time briefly (now and then for over a second, so
// that waits get long) and waiting with Timeout: plenty of long waits and
// of cycles at the level of members, none of waits. No ErrDeadlock.
func TestDeadlockChaosMix(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	const members, workers, names = 4, 4, 5
	var cs []*Coordinator
	for range members {
		cs = append(cs, newCoord(t, p))
	}
	runCtx, cancel := context.WithTimeout(ctx(t), 20*time.Second)
	defer cancel()
	var holds, long, deadlocks atomic.Int64
	var wg sync.WaitGroup
	for m := range members {
		for w := range workers {
			rng := rand.New(rand.NewPCG(uint64(m), uint64(w)))
			wg.Go(func() {
				for runCtx.Err() == nil {
					l := cs[m].GetLock(fmt.Sprintf("n%d", rng.IntN(names)))
					began := time.Now()
					var ok bool
					var err error
					if rng.IntN(4) == 0 {
						ok, err = l.AcquireShared(runCtx, Timeout(time.Duration(500+rng.IntN(2000))*time.Millisecond))
					} else {
						ok, err = l.Acquire(runCtx, Timeout(time.Duration(500+rng.IntN(2000))*time.Millisecond))
					}
					if time.Since(began) > deadlockTimeout {
						long.Add(1)
					}
					if errors.Is(err, ErrDeadlock) {
						deadlocks.Add(1)
						t.Errorf("false deadlock: %v", err)
					}
					if !ok {
						continue
					}
					holds.Add(1)
					d := time.Duration(rng.IntN(50)) * time.Millisecond
					if rng.IntN(8) == 0 {
						d = time.Duration(800+rng.IntN(700)) * time.Millisecond
					}
					select {
					case <-time.After(d):
					case <-runCtx.Done():
					}
					_ = l.Release(context.Background())
				}
			})
		}
	}
	wg.Wait()
	t.Logf("%d holds, %d waits past %v, %d deadlocks", holds.Load(), long.Load(), deadlockTimeout, deadlocks.Load())
	require.NotZero(t, long.Load(), "the mix had long waits to check")
	require.Zero(t, deadlocks.Load())
}

// TestDeadlockInProcess: two goroutines of one member, each holding what
// the other waits for, are a cycle too (the local table's waits are waits).
func TestDeadlockInProcess(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a := newCoord(t, p)
	steps := []cycleStep{
		lockStep(a, "x", false, "y", false),
		lockStep(a, "y", false, "x", false),
	}
	res := runCycle(t, steps, false, 200*time.Millisecond)
	requireOneVictim(t, steps, res)
}

func TestParseGoroutines(t *testing.T) {
	dump := []byte(`goroutine 7 [running]:
main.main()
	/x/main.go:3 +0x1

goroutine 12 [chan receive, 2 minutes]:
pkg.f()
	/x/f.go:9 +0x2
created by main.main in goroutine 7
	/x/main.go:4 +0x3

goroutine 30 [select]:
pkg.g()
created by pkg.f in goroutine 12
`)
	got := parseGoroutines(dump)
	require.Equal(t, map[int64]goroutineInfo{
		7:  {state: "running"},
		12: {state: "chan receive", parent: 7},
		30: {state: "select", parent: 12},
	}, got)
	require.Equal(t, []int64{30, 12}, actorGoroutines(30, got), "a creator waiting in-process answers for the wait; a running one does not")

	// The real thing: this goroutine, started by the test's.
	done := make(chan []int64)
	test := goid.Get()
	go func() {
		// Once the test's goroutine is blocked on done (it may still be
		// on its way there).
		for start := time.Now(); ; time.Sleep(time.Millisecond) {
			all := goroutines()
			if blockedInProcess(all[test].state) || time.Since(start) > 10*time.Second {
				done <- actorGoroutines(goid.Get(), all)
				return
			}
		}
	}()
	actor := <-done
	require.Len(t, actor, 2, "this goroutine and the test's, waiting on a channel: %v", actor)
	require.Equal(t, test, actor[1])
}

func TestFindDeadlocksSemaphore(t *testing.T) {
	at := time.Unix(1000, 0)
	node := func(member string, id int64, keys []int64, held ...int64) *waitNode {
		n := &waitNode{member: member, id: id, keys: keys, since: at.Add(time.Duration(id) * time.Second), held: map[int64]bool{}, name: strings.Repeat("k", int(id))}
		for _, k := range held {
			n.held[k] = false
		}
		return n
	}
	// W waits for any of slots 1, 2; A holds slot 1 and waits for x, which
	// W holds; slot 2 is held by someone not waiting: W will get it.
	w := node("w", 1, []int64{1, 2}, 100)
	a := node("a", 2, []int64{100}, 1)
	require.Empty(t, findDeadlocks([]*waitNode{w, a}))
	// Now B holds slot 2 and waits for x too: stuck.
	b := node("b", 3, []int64{100}, 2)
	got := findDeadlocks([]*waitNode{w, a, b})
	require.Len(t, got, 1)
	require.Equal(t, b, got[0].victim, "the youngest wait of the cycle")
	require.Len(t, got[0].members, 3)
}

// BenchmarkWaitWatch is what a waiting Acquire pays for deadlock detection
// and its context when its wait is short, granted in its first slice: the
// watch alone, its context never made (compare BenchmarkWaitWatchMade, a
// wait that needs its context and timer, and BenchmarkWaitWatchBefore, the
// context waits had before deadlock detection).
func BenchmarkWaitWatch(b *testing.B) {
	c := &Coordinator{runCtx: context.Background()}
	l := &Lock{c: c, full: "x"}
	b.ReportAllocs()
	for b.Loop() {
		w := c.watchWait(context.Background(), 1, l, nil, false)
		_ = w.result(nil)
		w.end()
	}
}

func BenchmarkWaitWatchMade(b *testing.B) {
	c := &Coordinator{runCtx: context.Background()}
	l := &Lock{c: c, full: "x"}
	b.ReportAllocs()
	for b.Loop() {
		w := c.watchWait(context.Background(), 1, l, nil, false)
		_ = w.Done()
		_ = w.result(nil)
		w.end()
	}
}

func BenchmarkWaitWatchBefore(b *testing.B) {
	runCtx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		stop := context.AfterFunc(runCtx, cancel)
		_ = ctx
		stop()
		cancel()
	}
}

// TestDeadlockIgnoresHoldsTheServerFreed: a goroutine holds x, its session
// is ended by the server (the lock is free there, the coordinator has not
// noticed yet), and it starts a goroutine to take x with another Lock and
// waits for it. Until the loss is noticed the second goroutine waits behind
// the first's claim in the process; that wait is long, not a deadlock: the
// hold it waits for no longer exists on the server. (A false ErrDeadlock
// of TestFencedWrites under load, seen twice.)
func TestDeadlockIgnoresHoldsTheServerFreed(t *testing.T) {
	t.Parallel()
	// A slow heartbeat: the loss is noticed seconds after the kill.
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.HeartbeatInterval = 4 * time.Second })
	first := c.GetLock("freed")
	mustAcquire(t, first, NoWait)
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, first.Key()))
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		ok, err := c.GetLock("freed").Acquire(ctx(t), Timeout(20*time.Second))
		if err == nil && !ok {
			err = errors.New("Timeout passed")
		}
		got <- err
	}()
	// This goroutine blocks in a select while the other waits: its holds
	// count as the waiter's (see actorGoroutines).
	select {
	case err := <-got:
		require.NoError(t, err, "a wait for a hold the server freed is no deadlock")
	case <-time.After(30 * time.Second):
		t.Fatal("the wait never ended")
	}
}
