package pgcoord

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcoord/pgcoord/db"
)

// sinceRecordAfter is how long a hold or a server-side wait lasts before
// its start is recorded in pgcoord.lock_since (for held_locks.since). Holds
// shorter than this, which are most, never cost a write; held_locks shows
// younger ones with pg_locks' and pg_stat_activity's own times.
const sinceRecordAfter = 100 * time.Millisecond

// sinceEntry is a hold or a server-side wait whose start is to be recorded,
// or was: key and pid are its row in pgcoord.lock_since.
type sinceEntry struct {
	key int64
	pid int32
	at  int64 // monoNow() when the hold was granted or the wait began
	// h is the hold; nil for a wait, which has ended instead.
	h     *hold
	ended *bool // a wait's end flag, guarded by the coordinator's mu
}

// done reports whether the hold or wait is over; called with c.mu held.
func (e *sinceEntry) done() bool {
	if e.h != nil {
		return e.h.ended
	}
	return *e.ended
}

// sinceBook lists the waits to record and what was recorded; guarded by
// the coordinator's mu. Holds are found in their sessions' holds by
// sinceLoop, so a grant costs the acquire path nothing but a clock read.
type sinceBook struct {
	pending  []sinceEntry // waits not written yet
	recorded []sinceEntry // written; their rows go when they end
	gone     []sinceEntry // ended after being written; rows to delete
	done     chan struct{}
	clock    sinceClock // used by sinceLoop only
}

// sinceClock maps monoNow() to the server's clock, as NTP does: it asks the
// server's time and takes the midpoint of the round trip, keeping of the
// last samples the one with the shortest round trip (its error is at most
// half of it), so a round trip slowed by load does not skew the times.
type sinceClock struct {
	samples [16]clockSample
	next    int
}

type clockSample struct {
	rtt, offset int64 // offset: server unix nanos - monoNow()
}

// goodClockRTT is the round trip under which a sample's error (at most half
// of it) is small enough for held_locks.since to be true to the millisecond.
const goodClockRTT = 2 * time.Millisecond

// maxClockSamples bounds the samples one call takes while the best round
// trip kept is longer than goodClockRTT.
const maxClockSamples = 4

// sample takes one more sample, or a few while no sample kept has a round
// trip under goodClockRTT (a new coordinator's first, or one taken while
// the process was busy: on a loaded 2-core machine running the suite under
// -race, a lone first sample of a 36 ms round trip put since 18 ms late),
// and returns the best offset.
func (k *sinceClock) sample(ctx context.Context, q *db.Queries, conn *pgx.Conn) (int64, error) {
	var best clockSample
	for i := 0; i < maxClockSamples; i++ {
		t0 := monoNow()
		srv, err := q.ServerNow(ctx, conn)
		t1 := monoNow()
		if err != nil {
			return 0, err
		}
		k.samples[k.next%len(k.samples)] = clockSample{rtt: t1 - t0, offset: srv.Time.UnixNano() - (t0+t1)/2}
		k.next++
		best = k.samples[0]
		for _, s := range k.samples[:min(k.next, len(k.samples))] {
			if s.rtt < best.rtt {
				best = s
			}
		}
		if time.Duration(best.rtt) <= goodClockRTT {
			break
		}
	}
	return best.offset, nil
}

// waitBegan notes a server-side wait for key on the backend pid, begun at
// at; the returned function ends it.
func (c *Coordinator) waitBegan(key int64, pid int32, at int64) (end func()) {
	ended := new(bool)
	c.mu.Lock()
	c.since.pending = append(c.since.pending, sinceEntry{key: key, pid: pid, at: at, ended: ended})
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		*ended = true
		c.mu.Unlock()
	}
}

// sinceLoop writes the starts of holds and waits that lasted
// sinceRecordAfter, and deletes the rows of those that ended, every
// sinceRecordAfter, on the control session.
func (c *Coordinator) sinceLoop() {
	defer close(c.since.done)
	t := time.NewTicker(sinceRecordAfter)
	defer t.Stop()
	for {
		select {
		case <-c.runCtx.Done():
			return
		case <-t.C:
		}
		c.flushSince()
	}
}

// flushSince sends one batch, if there is anything to send.
func (c *Coordinator) flushSince() {
	sessions := append(append([]*session(nil), c.lockSs...), c.waits.all()...)
	now := monoNow()
	old := func(at int64) bool { return time.Duration(now-at) >= sinceRecordAfter }
	var add, gone []sinceEntry
	c.mu.Lock()
	for _, s := range sessions {
		for h := range s.holds {
			if !h.sinceRecorded && !h.ended && old(h.grantedAt) {
				h.sinceRecorded = true
				add = append(add, sinceEntry{key: h.key, pid: h.pid, at: h.grantedAt, h: h})
			}
		}
	}
	keep := c.since.pending[:0]
	for _, e := range c.since.pending {
		switch {
		case e.done():
		case old(e.at):
			add = append(add, e)
		default:
			keep = append(keep, e)
		}
	}
	clear(c.since.pending[len(keep):])
	c.since.pending = keep
	rec := c.since.recorded[:0]
	for _, e := range c.since.recorded {
		if e.done() {
			gone = append(gone, e)
		} else {
			rec = append(rec, e)
		}
	}
	clear(c.since.recorded[len(rec):])
	c.since.recorded = append(rec, add...)
	gone = append(gone, c.since.gone...)
	c.since.gone = nil
	// A row stays while any of its entries lives: two shared holds of one
	// key on one session share a row.
	type row struct {
		key int64
		pid int32
	}
	live := map[row]bool{}
	if len(gone) > 0 {
		for _, e := range c.since.recorded {
			live[row{e.key, e.pid}] = true
		}
	}
	// One row per key and backend: the earliest start of its live
	// entries, those recorded before included (two shared holds on one
	// session, the second recorded a flush after the first: the row keeps
	// the first's start; TestSinceKeepsEarliestSharedStart), and a row both
	// added and gone is only added. (c.since.recorded holds the live
	// entries recorded so far and those added now.)
	newest := map[row]int64{}
	for _, e := range add {
		newest[row{e.key, e.pid}] = e.at
	}
	for _, e := range c.since.recorded {
		r := row{e.key, e.pid}
		if at, ok := newest[r]; ok && e.at < at {
			newest[r] = e.at
		}
	}
	c.mu.Unlock()
	if len(add) == 0 && len(gone) == 0 {
		return
	}

	var p db.RecordSinceParams
	var starts []int64
	for r, at := range newest {
		p.Keys, p.Pids = append(p.Keys, r.key), append(p.Pids, r.pid)
		starts = append(starts, at)
	}
	deleted := map[row]bool{}
	for _, e := range gone {
		r := row{e.key, e.pid}
		if _, added := newest[r]; !added && !deleted[r] && !live[r] {
			deleted[r] = true
			p.GoneKeys, p.GonePids = append(p.GoneKeys, r.key), append(p.GonePids, r.pid)
		}
	}
	ctx, cancel := context.WithTimeout(ownWork(c.runCtx), 5*time.Second)
	defer cancel()
	// detachedSync, not detached: it returns once the statement has run
	// or will not, so an error below means it did not insert. Under
	// detached, a control session busy past ctx returned the timeout with
	// the statement still queued, which later inserted rows for holds
	// that had ended meanwhile, and nothing deleted them
	// (TestSinceRowOfEndedHoldGoes).
	err := c.control.detachedSync(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		if len(starts) > 0 {
			offset, err := c.since.clock.sample(ctx, c.q, conn)
			if err != nil {
				return err
			}
			p.Sinces = p.Sinces[:0]
			for _, at := range starts {
				p.Sinces = append(p.Sinces, pgtype.Timestamptz{Time: time.Unix(0, at+offset), Valid: true})
			}
		}
		return c.q.RecordSince(ctx, conn, p)
	})
	if err != nil {
		// Try again with the next batch: the added entries go back to
		// pending (their ages grow, their starts do not move), the gone
		// rows stay to delete.
		c.mu.Lock()
		for _, e := range add {
			if e.h != nil {
				e.h.sinceRecorded = false // found again in its session
			} else {
				c.since.pending = append(c.since.pending, e)
			}
		}
		c.since.recorded = slicesWithout(c.since.recorded, len(add))
		c.since.gone = append(c.since.gone, gone...)
		// A statement whose connection broke may have committed with its
		// reply lost: its added rows are deleted next time, unless their
		// entries are added again (a row both added and gone is added).
		c.since.gone = append(c.since.gone, add...)
		c.mu.Unlock()
		if c.runCtx.Err() == nil {
			c.log.Debug("pgcoord: recording held_locks.since failed; retrying", "err", err)
		}
	}
}

// slicesWithout drops the last n entries of s (the ones just appended).
func slicesWithout(s []sinceEntry, n int) []sinceEntry {
	n = min(n, len(s))
	clear(s[len(s)-n:])
	return s[:len(s)-n]
}
