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
//
// Elections, semaphores and groups are observed per name, with the
// attribute election, semaphore or group (the name without the
// coordinator's Prefix): one data point for each election this coordinator
// campaigned in, each semaphore it tried to take, each group it is in or
// watches. Their names are chosen by the application, so the number of
// points is bounded by how many it uses, which for these primitives is a
// few per process (a leader per role, a semaphore per resource pool, a
// group per service); do not make such names per request or per object,
// as lock names often are (pgcoord reports at most 256 names of each
// kind, see pgcoord.Stats). Locks have no per-name points for that reason.
package pgcoordotel

import (
	"context"
	"errors"
	"slices"
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

	// ElectionLeader is a gauge per election this coordinator campaigned
	// in (attribute election): 1 while it leads it, else 0
	// (ElectionStats.Leader).
	ElectionLeader = "pgcoord.election.leader"
	// ElectionTermsWon counts the terms this coordinator won, per
	// election (ElectionStats.TermsWon).
	ElectionTermsWon = "pgcoord.election.terms.won"
	// ElectionTermsEnded counts the terms won that ended, whether by
	// Resign, loss or Stop, per election (ElectionStats.TermsEnded).
	ElectionTermsEnded = "pgcoord.election.terms.ended"
	// ElectionTermsLost counts the terms that ended by a fault (not by
	// Resign or Stop), per election (ElectionStats.TermsLost).
	ElectionTermsLost = "pgcoord.election.terms.lost"
	// SemaphoreSlotsHeld is the slots held now per semaphore this
	// coordinator tried to take (attribute semaphore;
	// SemaphoreStats.Held).
	SemaphoreSlotsHeld = "pgcoord.semaphore.slots.held"
	// GroupMembers is a gauge per group this coordinator is in or watches
	// (attribute group): the running members at its last read
	// (GroupStats.Members). A group joined but not watched is read at
	// each collection (one statement); a watched one is read by its watch.
	GroupMembers = "pgcoord.group.members"
)

// instrumentNames lists every instrument Register creates.
var instrumentNames = []string{LocksHeld, Acquires, AcquiresBusy, WaitDuration, LocksLost, Reconnects,
	Sessions, HeartbeatAge, Active, WaitsBeyondBudget, SessionsRefused,
	ElectionLeader, ElectionTermsWon, ElectionTermsEnded, ElectionTermsLost, SemaphoreSlotsHeld, GroupMembers}

// groupReadTimeout bounds the reads of joined, unwatched groups in one
// collection (see GroupMembers), all of them together: a collection must
// not hang on a database that does not answer.
const groupReadTimeout = 2 * time.Second

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
	leader, err := meter.Int64ObservableGauge(ElectionLeader, metric.WithDescription("1 while this coordinator leads the election (a term it won has not ended), else 0; a point per election it campaigned in."))
	keep(err)
	termsWon, err := meter.Int64ObservableCounter(ElectionTermsWon, metric.WithDescription("Terms of the election this coordinator won: Campaigns that returned as a new leader."), metric.WithUnit("{term}"))
	keep(err)
	termsEnded, err := meter.Int64ObservableCounter(ElectionTermsEnded, metric.WithDescription("Terms of the election this coordinator won that have ended: by Resign, by a fault, or by Stop."), metric.WithUnit("{term}"))
	keep(err)
	termsLost, err := meter.Int64ObservableCounter(ElectionTermsLost, metric.WithDescription("Terms of the election this coordinator won that ended by a fault (the session died, was cut off or went silent, or its lease ran out), not by Resign or Stop."), metric.WithUnit("{term}"))
	keep(err)
	semHeld, err := meter.Int64ObservableUpDownCounter(SemaphoreSlotsHeld, metric.WithDescription("Slots of the semaphore this coordinator holds now; a point per semaphore it tried to take."), metric.WithUnit("{slot}"))
	keep(err)
	groupMembers, err := meter.Int64ObservableGauge(GroupMembers, metric.WithDescription("Running members of the group, this one included if it joined, at this coordinator's last read of it; a point per group it is in or watches."), metric.WithUnit("{member}"))
	keep(err)
	// named returns the attributes of a per-name point: o.attrs and
	// key=name.
	named := func(key, name string) metric.MeasurementOption {
		return metric.WithAttributes(append(slices.Clip(o.attrs), attribute.String(key, name))...)
	}
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

	reg, err := meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		s := c.Stats()
		readGroups(ctx, c, s.Groups)
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
		for _, e := range s.Elections {
			at := named("election", e.Name)
			l := int64(0)
			if e.Leader {
				l = 1
			}
			obs.ObserveInt64(leader, l, at)
			obs.ObserveInt64(termsWon, int64(e.TermsWon), at)
			obs.ObserveInt64(termsEnded, int64(e.TermsEnded), at)
			obs.ObserveInt64(termsLost, int64(e.TermsLost), at)
		}
		for _, sem := range s.Semaphores {
			obs.ObserveInt64(semHeld, int64(sem.Held), named("semaphore", sem.Name))
		}
		for _, g := range s.Groups {
			if !g.ReadAt.IsZero() { // never read: no count to report
				obs.ObserveInt64(groupMembers, int64(g.Members), named("group", g.Name))
			}
		}
		return nil
	}, held, acquires, busy, lost, reconnects, sessions, hbAge, active, beyond, refused,
		leader, termsWon, termsEnded, termsLost, semHeld, groupMembers)
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

// readGroups reads the members of each group in gs that is joined but not
// watched (a watch reads it already), and sets its Members and ReadAt;
// GroupMembers also records the count in the coordinator's Stats. A group
// whose read fails keeps its last count.
func readGroups(ctx context.Context, c *pgcoord.Coordinator, gs []pgcoord.GroupStats) {
	var cancel context.CancelFunc
	for i := range gs {
		g := &gs[i]
		if !g.Joined || g.Watches > 0 {
			continue
		}
		if cancel == nil {
			ctx, cancel = context.WithTimeout(ctx, groupReadTimeout)
			defer cancel()
		}
		if ms, err := c.GroupMembers(ctx, g.Name); err == nil {
			g.Members, g.ReadAt = len(ms), time.Now()
		}
	}
}

// Unregister stops reporting: the callback and the wait observer are
// removed.
func (m *Metrics) Unregister() error {
	m.unregWait()
	return m.reg.Unregister()
}
