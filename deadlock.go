package pgcoord

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// Deadlock detection across members (docs/deadlocks.md).
//
// A member's holds and waits sit on different backends, and waits beyond
// the budget are not on the server at all, so PostgreSQL cannot see a cycle
// of waits among members. The library supplies what the server lacks: a
// wait that lasts deadlockTimeout is published in pgcoord.long_waits with
// the locks its waiter holds, and while it lasts its member reads every
// long wait and looks for a cycle. The node of the graph is the waiting
// goroutine with the holds it is responsible for (see actorGoroutines),
// as PostgreSQL's is a backend: a member-level graph would call two
// members whose goroutines merely wait for each other's working goroutines
// deadlocked. Holders that are not themselves waiting long break chains:
// they will release. The victim is the youngest wait of the cycle, the
// same whichever member looks, and only its own member aborts it.

// deadlockTimeout is how long a wait lasts before it is published and
// checked, like PostgreSQL's deadlock_timeout: shorter waits, which are
// most, cost nothing but a timer.
const deadlockTimeout = time.Second

// deadlockCheckEvery is how often a member checks again while it has a
// long wait.
const deadlockCheckEvery = 500 * time.Millisecond

// deadlockConfirm is how long after a first sighting a deadlock is
// checked again, and acted on only if seen again: a row a member has not
// yet deleted (its wait was just granted) or a holder that just released
// can show a cycle that is already gone. A cycle is broken within
// deadlockTimeout + deadlockConfirm and two checks' round trips.
const deadlockConfirm = 100 * time.Millisecond

// deadlockCheckBound bounds one check's statement.
const deadlockCheckBound = 2 * time.Second

// deadlockBook is the coordinator's long waits and the loop that checks
// them; its zero value is ready (see Coordinator.deadlocks).
type deadlockBook struct {
	mu   sync.Mutex
	long map[*waitWatch]struct{}
	// kick (capacity 1) wakes the loop: a wait became long or ended.
	kick    chan struct{}
	looping bool
	stopped bool
	loop    sync.WaitGroup
	// base makes wait ids unique across runs of a member (see the
	// migration); set once.
	base    int64
	nextID  atomic.Int64
	initted bool
	// published: this member's last check published waits (its rows are
	// in pgcoord.long_waits); the check loop's own.
	published bool
	// checks counts the checks that asked the server (for the tests).
	checks atomic.Int64
	// made counts the waits' contexts made (see waitWatch; for the tests).
	made atomic.Int64
}

// becameLong runs when the wait has lasted deadlockTimeout: it joins the
// long waits, and the check loop starts if it is not running.
func (w *waitWatch) becameLong() {
	d := &w.c.deadlocks
	d.mu.Lock()
	if w.ended || d.stopped || w.c.runCtx.Err() != nil {
		d.mu.Unlock()
		return
	}
	if !d.initted {
		d.initted = true
		d.long = map[*waitWatch]struct{}{}
		d.kick = make(chan struct{}, 1)
		d.base = rand.Int64N(1 << 62)
	}
	w.id = d.base + d.nextID.Add(1)
	w.long = true
	d.long[w] = struct{}{}
	start := !d.looping
	if start {
		d.looping = true
		d.loop.Add(1)
	}
	d.mu.Unlock()
	if start {
		go w.c.deadlockLoop()
	} else {
		signal(d.kick)
	}
}

// stopDeadlocks waits for the check loop to end (Stop, after cancelling
// runCtx).
func (c *Coordinator) stopDeadlocks() {
	d := &c.deadlocks
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.loop.Wait()
}

// forgetLongWaits deletes this member's rows in pgcoord.long_waits, for
// Stop: its check loop has ended, so nothing would delete them, and
// others would read them as live waits with the holds they list (released
// by Stop) until they go stale, 3 s later: a wait of another member for
// one of those names then closed a cycle with a member that was gone
// (TestNoDeadlockFromStoppedMembersRows). Failing costs only that, so it
// is logged, not returned.
func (c *Coordinator) forgetLongWaits(ctx context.Context, conn *pgx.Conn) {
	if err := c.q.ForgetLongWaits(ctx, conn, c.memberID); err != nil {
		c.log.Warn("pgcoord: deleting the member's long waits", "err", err)
	}
}

// deadlockLoop checks while this coordinator has long waits: at once when
// one becomes long or ends, then every deadlockCheckEvery (deadlockConfirm
// after a first sighting). It ends after a check that published no wait
// and succeeded (which deleted this member's rows).
func (c *Coordinator) deadlockLoop() {
	d := &c.deadlocks
	defer d.loop.Done()
	seen := map[string]int64{}
	next := time.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-c.runCtx.Done():
			d.mu.Lock()
			d.looping = false
			d.mu.Unlock()
			return
		case <-d.kick:
		case <-next.C:
		}
		d.mu.Lock()
		waits := make([]*waitWatch, 0, len(d.long))
		for w := range d.long {
			waits = append(waits, w)
		}
		d.mu.Unlock()
		after := c.checkDeadlocks(waits, seen)
		d.mu.Lock()
		// Not while this member's rows are published: a last check that
		// failed (the control session reconnecting) left them, and other
		// members would read them as live waits (TestDeadlockRowsGoAfterFailedCheck).
		if len(waits) == 0 && len(d.long) == 0 && !d.published {
			d.looping = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		next.Reset(after)
	}
}

// checkDeadlocks runs one check: it publishes waits (this member's long
// waits) with their waiters' holds, reads every member's, and aborts those
// of its waits that are the victim of a deadlock seen twice. It returns
// when to check next.
func (c *Coordinator) checkDeadlocks(waits []*waitWatch, seen map[string]int64) time.Duration {
	p := c.longWaitParams(waits)
	d := &c.deadlocks
	if len(p.WaitIds) == 0 && !d.published {
		// No wait of this member answers for a hold, so none can be in a
		// cycle (see longWaitParams), and no row of it is left to delete:
		// nothing to ask the server. A fleet's waits, which hold nothing
		// while they wait, cost no statement.
		return deadlockCheckEvery
	}
	var rows []db.CheckLongWaitsRow
	d.checks.Add(1)
	ctx, cancel := context.WithTimeout(c.runCtx, deadlockCheckBound)
	defer cancel()
	err := c.onControl(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		rows, err = c.q.CheckLongWaits(ctx, conn, p)
		return err
	})
	if err != nil {
		if c.runCtx.Err() == nil {
			c.log.Debug("pgcoord: deadlock check failed; trying again", "err", err)
		}
		return deadlockCheckEvery
	}
	d.published = len(p.WaitIds) > 0
	nodes := make([]*waitNode, 0, len(rows))
	for _, r := range rows {
		n := &waitNode{member: r.MemberID, id: r.WaitID, goroutine: r.Goroutine, name: r.Name,
			keys: r.WaitsFor, shared: r.Shared, since: r.Since.Time, held: map[int64]bool{}}
		for i, k := range r.HeldKeys {
			n.held[k] = i < len(r.HeldShared) && r.HeldShared[i]
		}
		nodes = append(nodes, n)
	}
	mine := map[int64]*waitWatch{}
	for _, w := range waits {
		mine[w.id] = w
	}
	after := deadlockCheckEvery
	now := monoNow()
	found := map[string]bool{}
	for _, dl := range findDeadlocks(nodes) {
		w := mine[dl.victim.id]
		if dl.victim.member != c.memberID || w == nil {
			continue // another member's victim: its member aborts it
		}
		sig := dl.signature()
		found[sig] = true
		first, ok := seen[sig]
		if !ok {
			seen[sig] = now
			after = deadlockConfirm
			continue
		}
		if time.Duration(now-first) < deadlockConfirm {
			after = min(after, deadlockConfirm-time.Duration(now-first))
			continue
		}
		err := fmt.Errorf("%w: %s", ErrDeadlock, dl.describe())
		c.log.Info("pgcoord: deadlock: aborting the youngest wait of the cycle", "wait", dl.victim.name, "cycle", dl.describe())
		w.abort(err)
	}
	for sig := range seen {
		if !found[sig] {
			delete(seen, sig)
		}
	}
	return after
}

// longWaitParams gathers what waits publish: each wait's keys, and the
// holds of the goroutines it answers for. A wait that answers for no hold
// is not published: nobody can wait for it, so it is in no cycle (holders
// that are not themselves waiting break chains). The goroutines a wait
// answers for are its own and, while that one is blocked in-process, its
// creator (actorGoroutines): telling whether the creator is blocked takes
// a dump of every goroutine's stack, which stops the world, so the dump is
// taken only when some wait's creator holds a lock, or is not known.
func (c *Coordinator) longWaitParams(waits []*waitWatch) db.CheckLongWaitsParams {
	p := db.CheckLongWaitsParams{MemberID: c.memberID}
	if len(waits) == 0 {
		return p
	}
	// Every hold of this coordinator by the goroutine that took it.
	type held struct {
		key    int64
		shared bool
		pid    int32 // the backend that holds it (see CheckLongWaits)
		at     int64 // grantedAt
	}
	byG := map[int64][]held{}
	sessions := append(append([]*session(nil), c.lockSs...), c.waits.all()...)
	c.mu.Lock()
	for _, s := range sessions {
		for h := range s.holds {
			if !h.ended {
				byG[h.gid] = append(byG[h.gid], held{h.key, h.shared, h.pid, h.grantedAt})
			}
		}
	}
	c.mu.Unlock()
	var all map[int64]goroutineInfo
	for _, w := range waits {
		if !w.parentKnown.Load() || len(byG[w.parentGID.Load()]) > 0 {
			all = goroutines()
			break
		}
	}
	now := monoNow()
	for _, w := range waits {
		actors := []int64{w.gid}
		if all != nil {
			actors = actorGoroutines(w.gid, all)
		}
		n := len(p.HeldKeys)
		// One element per hold: the server keeps those it still has.
		for _, g := range actors {
			for _, h := range byG[g] {
				if g == w.gid && h.at >= w.began {
					// Taken by the wait's own goroutine since the wait
					// began: the wait's own grant (its watch ends just
					// after), not a hold it waits with; counted, it made
					// a cycle of one (TestGrantedWaitAnswersNotForItsOwnGrant).
					continue
				}
				p.HeldKeys = append(p.HeldKeys, h.key)
				p.HeldShared = append(p.HeldShared, h.shared)
				p.HeldPids = append(p.HeldPids, h.pid)
			}
		}
		if len(p.HeldKeys) == n {
			continue // answers for no hold
		}
		name, forKeys := w.what()
		p.WaitIds = append(p.WaitIds, w.id)
		p.Goroutines = append(p.Goroutines, w.gid)
		p.Names = append(p.Names, name)
		p.ForKeys = append(p.ForKeys, forKeys...)
		p.Shared = append(p.Shared, w.shared)
		p.AgeMs = append(p.AgeMs, time.Duration(now-w.began).Milliseconds())
		p.ForEnds = append(p.ForEnds, int32(len(p.ForKeys)))
		p.HeldEnds = append(p.HeldEnds, int32(len(p.HeldKeys)))
	}
	return p
}

// what names what w waits for, as the error says it, and the keys it may
// take: a lock's or an election's one, or a semaphore's slots (any one).
func (w *waitWatch) what() (string, []int64) {
	if w.sem != nil {
		keys := make([]int64, w.sem.limit)
		for i := range keys {
			keys[i] = w.sem.slot(i, nil).key
		}
		return fmt.Sprintf("semaphore %q", w.sem.full), keys
	}
	if name, ok := strings.CutPrefix(w.lock.full, ElectionLockPrefix); ok {
		return fmt.Sprintf("election %q", name), []int64{w.lock.key}
	}
	return fmt.Sprintf("%q", w.lock.full), []int64{w.lock.key}
}
