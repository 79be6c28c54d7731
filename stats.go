package pgcoord

import (
	"slices"
	"sync/atomic"
	"time"
)

// Stats are a coordinator's counters since New, and a few gauges, for
// metrics and dashboards. The nested modules github.com/pgcoord/pgcoord/metrics/prom
// (a Prometheus collector) and .../metrics/otel (OpenTelemetry instruments)
// export them; for expvar or anything else, read them on each scrape.
type Stats struct {
	// Held is the number of locks held now.
	Held int64
	// Acquired counts successful acquisitions.
	Acquired uint64
	// Busy counts acquisitions that gave up: busy under NoWait, or still
	// busy when their Timeout ran out.
	Busy uint64
	// Waited counts acquisitions that had to wait (in-process or on the
	// server), whatever their outcome; WaitTime is their total time waiting.
	Waited   uint64
	WaitTime time.Duration
	// WaitBuckets is the histogram of those waits: WaitBuckets[i] counts
	// the waits that took at most WaitBucketBounds()[i] (cumulative, as
	// Prometheus histograms count); Waited is the +Inf bucket.
	WaitBuckets []uint64
	// Lost counts holds that ended without Release (see Lock.Lost).
	Lost uint64
	// Reconnects counts successful reconnects of the control session.
	Reconnects uint64
	// WaitsBeyondBudget counts waits that had no wait session to wait on
	// (see Config.MaxSessions) and were woken by a notification or the
	// dead-holder check instead.
	WaitsBeyondBudget uint64
	// RefusedSessions counts sessions not opened for want of connection
	// slots (see Config.ConnectionHeadroom and ErrTooManyConnections).
	RefusedSessions uint64
	// Sessions is the number of database sessions (backends) this
	// coordinator has open now: control, lock and wait sessions.
	Sessions int
	// HeartbeatAge is how long ago the backend last answered a heartbeat
	// (0 when not started): it grows while the database is unreachable,
	// and IsActive turns false at three HeartbeatIntervals.
	HeartbeatAge time.Duration
	// Active is IsActive().
	Active bool

	// Elections are the elections this coordinator has campaigned in,
	// Semaphores those it has tried to take, and Groups those it is in or
	// watches now, each sorted by name. They are counted as those
	// primitives change state, never on a Lock's Acquire or Release. Names
	// are meant to be few per process (each is a series in a metrics
	// backend): at most 256 of each kind are reported, the first used.
	Elections  []ElectionStats
	Semaphores []SemaphoreStats
	Groups     []GroupStats
}

// waitBounds are the upper bounds of Stats.WaitBuckets, from 1ms to 5
// minutes (see WaitBucketBounds).
var waitBounds = []time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
	10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute,
}

// WaitBucketBounds returns the upper bounds of Stats.WaitBuckets, from 1ms
// to 5 minutes (16 bounds; the +Inf bucket is Stats.Waited), for a
// histogram exporter. It returns a new copy on each call (16 durations), so
// a caller that changes it changes nothing else.
func WaitBucketBounds() []time.Duration { return slices.Clone(waitBounds) }

// coordStats holds the counters behind Stats.
type coordStats struct {
	held       atomic.Int64
	acquired   atomic.Uint64
	busy       atomic.Uint64
	waited     atomic.Uint64
	waitNanos  atomic.Int64
	lost       atomic.Uint64
	reconnects atomic.Uint64
	farWaits   atomic.Uint64
	// farPhases counts waitFar's calls: a wait beyond the budget makes
	// one for its first queueAfter and one with its ticket (tests watch
	// it to know the second has begun; farWaits counts the wait once).
	farPhases       atomic.Uint64
	refusedSessions atomic.Uint64
	// waitBuckets[i] counts waits in (waitBounds[i-1], waitBounds[i]]; the
	// last one those above every bound.
	waitBuckets [17]atomic.Uint64
	// waitObservers are the functions OnWait registered.
	waitObservers atomic.Pointer[[]*func(time.Duration)]
}

// countAcquire counts one acquisition's outcome: taken, or given up (busy
// under NoWait or at its Timeout); an error counts as neither.
func (c *Coordinator) countAcquire(took bool, err error) {
	if took {
		c.stats.acquired.Add(1)
	} else if err == nil {
		c.stats.busy.Add(1)
	}
}

// observeWait counts one acquisition that waited d.
func (c *Coordinator) observeWait(d time.Duration) {
	c.stats.waited.Add(1)
	c.stats.waitNanos.Add(int64(d))
	i := 0
	for i < len(waitBounds) && d > waitBounds[i] {
		i++
	}
	c.stats.waitBuckets[i].Add(1)
	if obs := c.stats.waitObservers.Load(); obs != nil {
		for _, f := range *obs {
			(*f)(d)
		}
	}
}

// OnWait registers fn to be called with the wait of every acquisition that
// had to wait, as Stats.Waited counts them, for a histogram that records
// each (OpenTelemetry's). fn runs on the acquiring goroutine after the wait:
// keep it cheap. The returned function unregisters it.
func (c *Coordinator) OnWait(fn func(waited time.Duration)) (unregister func()) {
	f := &fn
	for {
		old := c.stats.waitObservers.Load()
		var next []*func(time.Duration)
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, f)
		if c.stats.waitObservers.CompareAndSwap(old, &next) {
			break
		}
	}
	return func() {
		for {
			old := c.stats.waitObservers.Load()
			next := slices.DeleteFunc(slices.Clone(*old), func(g *func(time.Duration)) bool { return g == f })
			if c.stats.waitObservers.CompareAndSwap(old, &next) {
				return
			}
		}
	}
}

// Stats returns the coordinator's counters and gauges (all zero before
// Start). It does no I/O: atomic loads, a look at which sessions are open
// and a copy of the per-name stats of elections, semaphores and groups,
// cheap enough for every scrape.
func (c *Coordinator) Stats() Stats {
	es, ss, gs := c.prims.snapshot(c.running())
	// The buckets are read before Waited: observeWait counts a wait in
	// Waited before its bucket, so every wait a bucket read here shows is
	// in Waited too, and no bucket exceeds Waited (the +Inf bucket), as a
	// histogram's never may. Read the other way round, a wait that ended
	// between the two reads showed in a bucket and not in Waited.
	buckets := c.waitBuckets()
	return Stats{
		Held:              c.stats.held.Load(),
		Acquired:          c.stats.acquired.Load(),
		Busy:              c.stats.busy.Load(),
		Waited:            c.stats.waited.Load(),
		WaitTime:          time.Duration(c.stats.waitNanos.Load()),
		Lost:              c.stats.lost.Load(),
		Reconnects:        c.stats.reconnects.Load(),
		WaitsBeyondBudget: c.stats.farWaits.Load(),
		RefusedSessions:   c.stats.refusedSessions.Load(),
		WaitBuckets:       buckets,
		Sessions:          c.openSessions(),
		HeartbeatAge:      c.heartbeatAge(),
		Active:            c.IsActive(),
		Elections:         es,
		Semaphores:        ss,
		Groups:            gs,
	}
}

// waitBuckets returns the cumulative wait histogram.
func (c *Coordinator) waitBuckets() []uint64 {
	out := make([]uint64, len(waitBounds))
	var sum uint64
	for i := range out {
		sum += c.stats.waitBuckets[i].Load()
		out[i] = sum
	}
	return out
}

// openSessions counts the sessions whose connection is open now.
func (c *Coordinator) openSessions() int {
	if c.state.Load() != stateStarted {
		return 0
	}
	n := 0
	for _, s := range append(append([]*session{c.control}, c.lockSs...), c.waits.all()...) {
		if s != nil && s.raw.Load() != nil {
			n++
		}
	}
	return n
}

// heartbeatAge is the time since the backend last answered a heartbeat.
func (c *Coordinator) heartbeatAge() time.Duration {
	if c.state.Load() != stateStarted {
		return 0
	}
	return max(time.Since(time.Unix(0, c.lastBeat.Load())), 0)
}
