// Package pgcoordprom exports a pgcoord Coordinator's Stats as Prometheus
// metrics. It is a module of its own, so that the pgcoord library's go.mod
// does not require the Prometheus client.
//
//	prometheus.MustRegister(pgcoordprom.New(c))
//
// Every metric is read from Coordinator.Stats at scrape time; nothing is
// recorded on the locking path. The Grafana dashboard in grafana/ uses
// these names.
//
// Elections, semaphores and groups have a series per name, labelled
// election, semaphore and group (the name without the coordinator's
// Prefix): one for each election this coordinator campaigned in, each
// semaphore it tried to take, each group it is in or watches. Their names
// are chosen by the application, so the number of series is bounded by
// how many it uses, which for these primitives is a few per process (a
// leader per role, a semaphore per resource pool, a group per service);
// do not make such names per request or per object, as lock names often
// are (pgcoord reports at most 256 names of each kind, see
// pgcoord.Stats). Locks have no per-name series for that reason.
package pgcoordprom

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgcoord/pgcoord"
)

// Metric names, as scraped (the histogram adds _bucket, _sum and _count).
// They are part of the API: dashboards and alerts query them.
const (
	// LocksHeld is a gauge: locks held now (Stats.Held).
	LocksHeld = "pgcoord_locks_held"
	// Acquires counts successful acquisitions (Stats.Acquired).
	Acquires = "pgcoord_acquires_total"
	// AcquiresBusy counts acquisitions that gave up, busy under NoWait or
	// at their Timeout (Stats.Busy).
	AcquiresBusy = "pgcoord_acquires_busy_total"
	// WaitDuration is a histogram of the acquisitions that had to wait,
	// whatever their outcome (Stats.WaitBuckets, over
	// pgcoord.WaitBucketBounds).
	WaitDuration = "pgcoord_wait_duration_seconds"
	// LocksLost counts holds that ended without Release (Stats.Lost).
	LocksLost = "pgcoord_locks_lost_total"
	// Reconnects counts reconnects of the control session (Stats.Reconnects).
	Reconnects = "pgcoord_reconnects_total"
	// Sessions is a gauge: database sessions open now (Stats.Sessions).
	Sessions = "pgcoord_sessions"
	// HeartbeatAge is a gauge: seconds since the backend last answered a
	// heartbeat (Stats.HeartbeatAge).
	HeartbeatAge = "pgcoord_heartbeat_age_seconds"
	// Active is 1 while the coordinator is active (Stats.Active), else 0.
	Active = "pgcoord_active"
	// WaitsBeyondBudget counts waits that had no wait session
	// (Stats.WaitsBeyondBudget).
	WaitsBeyondBudget = "pgcoord_waits_beyond_budget_total"
	// SessionsRefused counts sessions not opened for want of connection
	// slots (Stats.RefusedSessions).
	SessionsRefused = "pgcoord_sessions_refused_total"

	// ElectionLeader is a gauge per election this coordinator campaigned
	// in (label election): 1 while it leads it, else 0
	// (ElectionStats.Leader).
	ElectionLeader = "pgcoord_election_leader"
	// ElectionTermsWon counts the terms this coordinator won, per
	// election (ElectionStats.TermsWon).
	ElectionTermsWon = "pgcoord_election_terms_won_total"
	// ElectionTermsEnded counts the terms won that ended, whether by
	// Resign, loss or Stop, per election (ElectionStats.TermsEnded).
	ElectionTermsEnded = "pgcoord_election_terms_ended_total"
	// ElectionTermsLost counts the terms that ended by a fault (not by
	// Resign or Stop), per election (ElectionStats.TermsLost).
	ElectionTermsLost = "pgcoord_election_terms_lost_total"
	// SemaphoreSlotsHeld is a gauge per semaphore this coordinator tried
	// to take (label semaphore): its slots held now
	// (SemaphoreStats.Held).
	SemaphoreSlotsHeld = "pgcoord_semaphore_slots_held"
	// GroupMembers is a gauge per group this coordinator is in or watches
	// (label group): the running members at its last read
	// (GroupStats.Members). A group joined but not watched is read at
	// each scrape (one statement); a watched one is read by its watch.
	GroupMembers = "pgcoord_group_members"
)

// metricNames lists every metric the collector exports.
var metricNames = []string{LocksHeld, Acquires, AcquiresBusy, WaitDuration, LocksLost, Reconnects,
	Sessions, HeartbeatAge, Active, WaitsBeyondBudget, SessionsRefused,
	ElectionLeader, ElectionTermsWon, ElectionTermsEnded, ElectionTermsLost, SemaphoreSlotsHeld, GroupMembers}

// groupReadTimeout bounds the reads of joined, unwatched groups in one
// scrape (see GroupMembers), all of them together: a scrape must not hang
// on a database that does not answer.
const groupReadTimeout = 2 * time.Second

// Collector is a prometheus.Collector over one Coordinator.
type Collector struct {
	c *pgcoord.Coordinator

	held, acquires, busy, wait, lost, reconnects, sessions, hbAge, active, beyond, refused *prometheus.Desc

	leader, termsWon, termsEnded, termsLost, semHeld, groupMembers *prometheus.Desc
}

// Option configures New.
type Option func(*options)

type options struct{ labels prometheus.Labels }

// WithConstLabels adds labels to every metric: needed to tell coordinators
// apart when one process registers several (e.g. {"prefix": "cinder/"}).
func WithConstLabels(l prometheus.Labels) Option {
	return func(o *options) { o.labels = l }
}

// New returns a collector of c's metrics; register it with a
// prometheus.Registerer.
func New(c *pgcoord.Coordinator, opts ...Option) *Collector {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, o.labels)
	}
	return &Collector{
		c:          c,
		held:       d(LocksHeld, "Locks held now."),
		acquires:   d(Acquires, "Successful acquisitions."),
		busy:       d(AcquiresBusy, "Acquisitions that gave up: busy under NoWait, or still busy when their Timeout ran out."),
		wait:       d(WaitDuration, "Time acquisitions spent waiting (those that had to wait, whatever their outcome)."),
		lost:       d(LocksLost, "Holds that ended without Release: their session died, was cut off or went silent, or Stop ran."),
		reconnects: d(Reconnects, "Successful reconnects of the control session."),
		sessions:   d(Sessions, "Database sessions (backends) the coordinator has open now."),
		hbAge:      d(HeartbeatAge, "Seconds since the database last answered a heartbeat; grows while it is unreachable."),
		active:     d(Active, "1 while the coordinator is started and its database answers (IsActive), else 0."),
		beyond:     d(WaitsBeyondBudget, "Waits that had no wait session (session budget) and were woken by a notification instead."),
		refused:    d(SessionsRefused, "Sessions not opened for want of connection slots on the server."),

		leader:       d(ElectionLeader, "1 while this coordinator leads the election (a term it won has not ended), else 0; a series per election it campaigned in.", "election"),
		termsWon:     d(ElectionTermsWon, "Terms of the election this coordinator won: Campaigns that returned as a new leader.", "election"),
		termsEnded:   d(ElectionTermsEnded, "Terms of the election this coordinator won that have ended: by Resign, by a fault, or by Stop.", "election"),
		termsLost:    d(ElectionTermsLost, "Terms of the election this coordinator won that ended by a fault (the session died, was cut off or went silent, or its lease ran out), not by Resign or Stop.", "election"),
		semHeld:      d(SemaphoreSlotsHeld, "Slots of the semaphore this coordinator holds now; a series per semaphore it tried to take.", "semaphore"),
		groupMembers: d(GroupMembers, "Running members of the group, this one included if it joined, at this coordinator's last read of it; a series per group it is in or watches.", "group"),
	}
}

// Describe implements prometheus.Collector.
func (x *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{x.held, x.acquires, x.busy, x.wait, x.lost, x.reconnects,
		x.sessions, x.hbAge, x.active, x.beyond, x.refused,
		x.leader, x.termsWon, x.termsEnded, x.termsLost, x.semHeld, x.groupMembers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats call per scrape, and a
// read of each group this coordinator joined but does not watch (bounded
// by 2 seconds in all; a group not read keeps its last count).
func (x *Collector) Collect(ch chan<- prometheus.Metric) {
	s := x.c.Stats()
	readGroups(x.c, s.Groups)
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(x.held, float64(s.Held))
	counter(x.acquires, s.Acquired)
	counter(x.busy, s.Busy)
	bounds := pgcoord.WaitBucketBounds()
	buckets := make(map[float64]uint64, len(bounds))
	for i, b := range bounds {
		buckets[b.Seconds()] = s.WaitBuckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(x.wait, s.Waited, s.WaitTime.Seconds(), buckets)
	counter(x.lost, s.Lost)
	counter(x.reconnects, s.Reconnects)
	gauge(x.sessions, float64(s.Sessions))
	gauge(x.hbAge, s.HeartbeatAge.Seconds())
	active := 0.0
	if s.Active {
		active = 1
	}
	gauge(x.active, active)
	counter(x.beyond, s.WaitsBeyondBudget)
	counter(x.refused, s.RefusedSessions)

	for _, e := range s.Elections {
		leader := 0.0
		if e.Leader {
			leader = 1
		}
		ch <- prometheus.MustNewConstMetric(x.leader, prometheus.GaugeValue, leader, e.Name)
		ch <- prometheus.MustNewConstMetric(x.termsWon, prometheus.CounterValue, float64(e.TermsWon), e.Name)
		ch <- prometheus.MustNewConstMetric(x.termsEnded, prometheus.CounterValue, float64(e.TermsEnded), e.Name)
		ch <- prometheus.MustNewConstMetric(x.termsLost, prometheus.CounterValue, float64(e.TermsLost), e.Name)
	}
	for _, sem := range s.Semaphores {
		ch <- prometheus.MustNewConstMetric(x.semHeld, prometheus.GaugeValue, float64(sem.Held), sem.Name)
	}
	for _, g := range s.Groups {
		if g.ReadAt.IsZero() {
			continue // never read: no count to report
		}
		ch <- prometheus.MustNewConstMetric(x.groupMembers, prometheus.GaugeValue, float64(g.Members), g.Name)
	}
}

// readGroups reads the members of each group in gs that is joined but not
// watched (a watch reads it already), and sets its Members and ReadAt;
// GroupMembers also records the count in the coordinator's Stats. A group
// whose read fails keeps its last count.
func readGroups(c *pgcoord.Coordinator, gs []pgcoord.GroupStats) {
	var ctx context.Context
	for i := range gs {
		g := &gs[i]
		if !g.Joined || g.Watches > 0 {
			continue
		}
		if ctx == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), groupReadTimeout)
			defer cancel()
		}
		if ms, err := c.GroupMembers(ctx, g.Name); err == nil {
			g.Members, g.ReadAt = len(ms), time.Now()
		}
	}
}
