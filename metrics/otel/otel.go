// Package pgcoordotel reports a pgcoord Coordinator's metrics through
// OpenTelemetry instruments. It is a module of its own, so that the pgcoord
// library's go.mod does not require OpenTelemetry.
//
//	m, err := pgcoordotel.Register(c, otel.Meter("pgcoord"))
//	defer m.Unregister()
//
// Counters and gauges are observed from Coordinator.Stats at collection
// time; the wait-time histogram records each wait as it ends
// (Coordinator.OnWait), since OpenTelemetry has no asynchronous histogram.
package pgcoordotel

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pgcoord/pgcoord"
)

// Instrument names. They are part of the API: dashboards and alerts query
// them.
const (
	// LocksHeld is a gauge: locks held now (Stats.Held).
	LocksHeld = "pgcoord.locks.held"
	// Acquires counts successful acquisitions (Stats.Acquired).
	Acquires = "pgcoord.acquires"
	// AcquiresBusy counts acquisitions that gave up, busy under NoWait or
	// at their Timeout (Stats.Busy).
	AcquiresBusy = "pgcoord.acquires.busy"
	// WaitDuration is a histogram, in seconds, of the acquisitions that had
	// to wait, whatever their outcome, over pgcoord.WaitBucketBounds.
	WaitDuration = "pgcoord.wait.duration"
	// LocksLost counts holds that ended without Release (Stats.Lost).
	LocksLost = "pgcoord.locks.lost"
	// Reconnects counts reconnects of the control session (Stats.Reconnects).
	Reconnects = "pgcoord.reconnects"
	// Sessions is a gauge: database sessions open now (Stats.Sessions).
	Sessions = "pgcoord.sessions"
	// HeartbeatAge is a gauge: seconds since the backend last answered a
	// heartbeat (Stats.HeartbeatAge).
	HeartbeatAge = "pgcoord.heartbeat.age"
	// Active is 1 while the coordinator is active (Stats.Active), else 0.
	Active = "pgcoord.active"
	// WaitsBeyondBudget counts waits that had no wait session
	// (Stats.WaitsBeyondBudget).
	WaitsBeyondBudget = "pgcoord.waits.beyond_budget"
	// SessionsRefused counts sessions not opened for want of connection
	// slots (Stats.RefusedSessions).
	SessionsRefused = "pgcoord.sessions.refused"
)

// instrumentNames lists every instrument Register creates.
var instrumentNames = []string{LocksHeld, Acquires, AcquiresBusy, WaitDuration, LocksLost, Reconnects,
	Sessions, HeartbeatAge, Active, WaitsBeyondBudget, SessionsRefused}

// Metrics are the instruments of one coordinator.
type Metrics struct {
	reg          metric.Registration
	unregWait    func()
	waitDuration metric.Float64Histogram
}

// Option configures Register.
type Option func(*options)

type options struct{ attrs []attribute.KeyValue }

// WithAttributes adds attributes to every measurement: needed to tell
// coordinators apart when one process registers several.
func WithAttributes(kv ...attribute.KeyValue) Option {
	return func(o *options) { o.attrs = append(o.attrs, kv...) }
}

// Register creates the instruments on meter and starts reporting c's
// metrics; Unregister stops it.
func Register(c *pgcoord.Coordinator, meter metric.Meter, opts ...Option) (*Metrics, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	attrs := metric.WithAttributes(o.attrs...)
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	held, err := meter.Int64ObservableUpDownCounter(LocksHeld, metric.WithDescription("Locks held now."), metric.WithUnit("{lock}"))
	keep(err)
	acquires, err := meter.Int64ObservableCounter(Acquires, metric.WithDescription("Successful acquisitions."), metric.WithUnit("{acquisition}"))
	keep(err)
	busy, err := meter.Int64ObservableCounter(AcquiresBusy, metric.WithDescription("Acquisitions that gave up: busy under NoWait, or still busy when their Timeout ran out."), metric.WithUnit("{acquisition}"))
	keep(err)
	lost, err := meter.Int64ObservableCounter(LocksLost, metric.WithDescription("Holds that ended without Release."), metric.WithUnit("{lock}"))
	keep(err)
	reconnects, err := meter.Int64ObservableCounter(Reconnects, metric.WithDescription("Successful reconnects of the control session."), metric.WithUnit("{reconnect}"))
	keep(err)
	sessions, err := meter.Int64ObservableGauge(Sessions, metric.WithDescription("Database sessions (backends) open now."), metric.WithUnit("{session}"))
	keep(err)
	hbAge, err := meter.Float64ObservableGauge(HeartbeatAge, metric.WithDescription("Time since the database last answered a heartbeat."), metric.WithUnit("s"))
	keep(err)
	active, err := meter.Int64ObservableGauge(Active, metric.WithDescription("1 while the coordinator is started and its database answers (IsActive), else 0."))
	keep(err)
	beyond, err := meter.Int64ObservableCounter(WaitsBeyondBudget, metric.WithDescription("Waits that had no wait session and were woken by a notification instead."), metric.WithUnit("{wait}"))
	keep(err)
	refused, err := meter.Int64ObservableCounter(SessionsRefused, metric.WithDescription("Sessions not opened for want of connection slots."), metric.WithUnit("{session}"))
	keep(err)
	waitBounds := pgcoord.WaitBucketBounds()
	bounds := make([]float64, len(waitBounds))
	for i, b := range waitBounds {
		bounds[i] = b.Seconds()
	}
	wait, err := meter.Float64Histogram(WaitDuration, metric.WithDescription("Time acquisitions spent waiting (those that had to wait, whatever their outcome)."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(bounds...))
	keep(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	reg, err := meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		s := c.Stats()
		obs.ObserveInt64(held, s.Held, attrs)
		obs.ObserveInt64(acquires, int64(s.Acquired), attrs)
		obs.ObserveInt64(busy, int64(s.Busy), attrs)
		obs.ObserveInt64(lost, int64(s.Lost), attrs)
		obs.ObserveInt64(reconnects, int64(s.Reconnects), attrs)
		obs.ObserveInt64(sessions, int64(s.Sessions), attrs)
		obs.ObserveFloat64(hbAge, s.HeartbeatAge.Seconds(), attrs)
		a := int64(0)
		if s.Active {
			a = 1
		}
		obs.ObserveInt64(active, a, attrs)
		obs.ObserveInt64(beyond, int64(s.WaitsBeyondBudget), attrs)
		obs.ObserveInt64(refused, int64(s.RefusedSessions), attrs)
		return nil
	}, held, acquires, busy, lost, reconnects, sessions, hbAge, active, beyond, refused)
	if err != nil {
		return nil, err
	}
	m := &Metrics{reg: reg, waitDuration: wait}
	recordOpt := metric.WithAttributeSet(attribute.NewSet(o.attrs...))
	m.unregWait = c.OnWait(func(d time.Duration) {
		m.waitDuration.Record(context.Background(), d.Seconds(), recordOpt)
	})
	return m, nil
}

// Unregister stops reporting: the callback and the wait observer are
// removed.
func (m *Metrics) Unregister() error {
	m.unregWait()
	return m.reg.Unregister()
}
