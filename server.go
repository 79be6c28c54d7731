package pgcoord

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// serverIdentity says which server a session reached: the cluster (its
// system identifier, which a streaming standby shares with its primary) and
// the timeline it writes WAL on, which promotion moves to a new one. Two
// sessions with the same identity are on the same primary: two primaries
// of one cluster on one timeline cannot both take writes.
type serverIdentity struct {
	systemID int64
	timeline int32
}

// String names the identity in errors.
func (id serverIdentity) String() string {
	return fmt.Sprintf("system %d timeline %d", id.systemID, id.timeline)
}

// sessionFound is what a new session learnt about its server as it
// connected (see the SessionIdentity query).
type sessionFound struct {
	pid        int32
	inRecovery bool
	identity   serverIdentity
}

// found reads a SessionIdentity row: the timeline is the first 8 hex digits
// of the WAL file name (none in recovery).
func found(pid int32, inRecovery bool, systemID int64, walFile string) (sessionFound, error) {
	f := sessionFound{pid: pid, inRecovery: inRecovery, identity: serverIdentity{systemID: systemID}}
	if inRecovery {
		return f, nil
	}
	if len(walFile) < 8 {
		return f, fmt.Errorf("pgcoord: unreadable WAL file name %q", walFile)
	}
	tli, err := strconv.ParseUint(walFile[:8], 16, 32)
	if err != nil || tli == 0 || tli > math.MaxInt32 {
		return f, fmt.Errorf("pgcoord: unreadable timeline in WAL file name %q", walFile)
	}
	f.identity.timeline = int32(tli)
	return f, nil
}

// skipStandbys makes the connection attempt move on from a hot standby to
// the next host of a multi-host connection string, as
// target_session_attrs=read-write does, even when the string does not say
// so; with one host it fails with ErrWrongServer. A hot standby says so in
// the in_hot_standby parameter it reports as the session starts
// (PostgreSQL 14+), so this costs no round trip; older servers do not
// report it, and the check in dial refuses a standby there. cc's own
// ValidateConnect (target_session_attrs) still runs.
func skipStandbys(cc *pgx.ConnConfig) {
	prev := cc.ValidateConnect
	cc.ValidateConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		if pc.ParameterStatus("in_hot_standby") == "on" {
			return fmt.Errorf("%w: %s is a hot standby", ErrWrongServer, pc.Conn().RemoteAddr())
		}
		if prev != nil {
			return prev(ctx, pc)
		}
		return nil
	}
}

// checkServer refuses a session that reached the wrong server: a standby,
// or (for any session but the control session, whose server the others
// follow) a server whose identity differs from the control session's.
//
// The control session follows a failover to whichever server it reaches,
// except back: a primary of its cluster on an earlier timeline than the one
// it was on is an old primary that kept running or was started again
// beside the promoted one (no watchdog, a node restarted by hand), listed
// first in a multi-host string or still behind a DNS name. Moving there
// would end every hold on the new primary, take locks on a server the rest
// of the fleet has left, and issue fencing tokens below those this
// coordinator already issued (TestControlNeverBackToOlderTimeline).
func (c *Coordinator) checkServer(kind sessionKind, conn *pgx.Conn, f sessionFound) error {
	addr := conn.PgConn().Conn().RemoteAddr()
	if f.inRecovery {
		return fmt.Errorf("%w: %s session reached %s, a standby in recovery: list the primary first, or add target_session_attrs=read-write, and never use a read-replica endpoint",
			ErrWrongServer, kind, addr)
	}
	got := f.identity
	want := c.identity.Load()
	if kind == sessionControl {
		if want != nil && got.systemID == want.systemID && got.timeline < want.timeline {
			return fmt.Errorf("%w: control session reached %s (%v), an old primary: the control session was on %v, a later timeline of that cluster (a primary promoted since); stop or demote the old one",
				ErrWrongServer, addr, got, *want)
		}
		return nil
	}
	switch {
	case want == nil:
		return fmt.Errorf("%w: %s session reached %s (%v) before the control session connected", ErrWrongServer, kind, addr, got)
	case got != *want:
		return fmt.Errorf("%w: %s session reached %s (%v), but the control session is on %v (a failover in progress, or the connection string names servers of different clusters)",
			ErrWrongServer, kind, addr, got, *want)
	}
	return nil
}

// onControlServer reports whether s's connection is on the control
// session's server, as the control session last found it: after a failover
// the control session moves to the new primary and every other session
// must follow. The control session itself always is.
func (s *session) onControlServer() bool {
	if s.kind == sessionControl {
		return true
	}
	want := s.c.identity.Load()
	return want != nil && s.identity == *want
}

// controlBehind reports whether a session other than the control session
// reached a primary of the control session's cluster on a later timeline
// than the control session's: a failover happened, and the control
// session is on the old primary, dead or demoted, whether or not it has
// noticed yet (its heartbeat finds out at the next beat).
func (c *Coordinator) controlBehind(kind sessionKind, f sessionFound) bool {
	want := c.identity.Load()
	return kind != sessionControl && !f.inRecovery && want != nil &&
		f.identity.systemID == want.systemID && f.identity.timeline > want.timeline
}

// awaitControl is for a session that found the new primary before the
// control session did (controlBehind): instead of refusing the connection,
// and having the caller dial again and be refused again until the control
// session has reconnected, it moves the control session there at once (a
// beat now, which finds a connection to the old primary broken and starts
// the reconnect; a reconnect under way asked to try now, and again every
// reconnectKickEvery) and keeps the connection until the control session
// is on the same server, then accepts it (checkServer again). It gives up,
// with checkServer's refusal, when ctx or opTimeout ends, when the control
// session lands elsewhere, or when a beat after the ask finds the control
// session sound where it is (two primaries: no client can tell which is
// right, and the control session's stays the one pgcoord follows).
//
// After a failover this saves the first Acquire a dial and the
// preparing round trip once the control session is back, and spares the
// new primary a connection per retry meanwhile.
func (c *Coordinator) awaitControl(ctx context.Context, kind sessionKind, conn *pgx.Conn, f sessionFound) error {
	bound := time.NewTimer(c.opTimeout())
	defer bound.Stop()
	// A beat is bounded by one interval; one asked now has run by then.
	settled := time.Now().Add(2 * c.cfg.HeartbeatInterval)
	c.beatSoon()
	c.reconnectNow()
	for {
		c.reconnMu.Lock()
		reconnected := c.reconnected
		c.reconnMu.Unlock()
		err := c.checkServer(kind, conn, f)
		if err == nil || !c.controlBehind(kind, f) {
			return err
		}
		if c.active.Load() && time.Now().After(settled) {
			return err // the control session is sound on the old timeline
		}
		kick := time.NewTimer(reconnectKickEvery)
		select {
		case <-reconnected:
		case <-kick.C:
			c.reconnectSoon()
		case <-bound.C:
			return err
		case <-ctx.Done():
			return err
		case <-c.runCtx.Done():
			return err
		}
		kick.Stop()
	}
}
