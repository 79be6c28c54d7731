// Package pgcoordprom exports a pgcoord Coordinator's Stats as Prometheus
// metrics. It is a module of its own, so that the pgcoord library's go.mod
// does not require the Prometheus client.
//
//	prometheus.MustRegister(pgcoordprom.New(c))
//
// Every metric is read from Coordinator.Stats at scrape time; nothing is
// recorded on the locking path. The Grafana dashboard in grafana/ uses
// these names.
package pgcoordprom

import (
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
)

// metricNames lists every metric the collector exports.
var metricNames = []string{LocksHeld, Acquires, AcquiresBusy, WaitDuration, LocksLost, Reconnects,
	Sessions, HeartbeatAge, Active, WaitsBeyondBudget, SessionsRefused}

// Collector is a prometheus.Collector over one Coordinator.
type Collector struct {
	c *pgcoord.Coordinator

	held, acquires, busy, wait, lost, reconnects, sessions, hbAge, active, beyond, refused *prometheus.Desc
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
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, o.labels) }
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
	}
}

// Describe implements prometheus.Collector.
func (x *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{x.held, x.acquires, x.busy, x.wait, x.lost, x.reconnects,
		x.sessions, x.hbAge, x.active, x.beyond, x.refused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats call per scrape.
func (x *Collector) Collect(ch chan<- prometheus.Metric) {
	s := x.c.Stats()
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
}
