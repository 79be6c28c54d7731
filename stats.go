package pgcoord

import (
	"sync/atomic"
	"time"
)

// Stats are a coordinator's counters since New, for metrics and dashboards:
// export them to Prometheus or expvar as gauges and counters.
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
	// Active is IsActive().
	Active bool
}

// coordStats holds the counters behind Stats.
type coordStats struct {
	held            atomic.Int64
	acquired        atomic.Uint64
	busy            atomic.Uint64
	waited          atomic.Uint64
	waitNanos       atomic.Int64
	lost            atomic.Uint64
	reconnects      atomic.Uint64
	farWaits        atomic.Uint64
	refusedSessions atomic.Uint64
}

// Stats returns the coordinator's counters.
func (c *Coordinator) Stats() Stats {
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
		Active:            c.IsActive(),
	}
}
