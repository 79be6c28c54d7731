package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// Start refuses servers on which a lock would not be a lock. Two kinds are
// common:
//
//   - a transaction-pooling proxy (PgBouncer pool_mode=transaction, RDS
//     Proxy, Supavisor in transaction mode) hands each transaction a server
//     session of its choice: a session lock stays behind on a backend other
//     clients share. checkDistinctBackends and checkMemberLockStays catch it
//     (ErrSessionLocksUnsupported);
//   - a server that speaks PostgreSQL's protocol but whose advisory locks
//     are stubs: CockroachDB's pg_try_advisory_lock returns true without
//     locking anything. checkLocksExclude catches it, and any other such
//     server, by asking (ErrAdvisoryLocksUnsupported).

// probeKey returns the two int32 halves of the key Start probes with: a
// two-int advisory key (a space lock keys never use) derived from the member
// id, so that nobody else takes it; the "probe\x00" prefix keeps it apart
// from the member lock of the same id.
func probeKey(memberID string) (hi, lo int32) {
	key := hash.Key("pgcoord\x00probe\x00" + memberID)
	return int32(key >> 32), int32(key)
}

// checkLocksExclude makes sure that advisory locks exclude on this server,
// at the cost of one round trip on each of the two sessions Start opens: the
// control session takes the probe key, the lock session must be refused it.
// The control session keeps the probe key until it closes (releasing it
// would cost a third round trip); it is one entry in the server's lock
// table, beside the member lock the control session also holds.
//
// CockroachDB says who it is when a session starts (the crdb_version
// parameter): checkServerVersion refuses it before any statement (see
// refuseAnnouncedFakeLocks), as it reports server_version 13.0.0. Two
// sessions on one backend are left to checkDistinctBackends, which
// reports a pooler.
//
// A lock session granted the key is believed only once the control
// session is found still on the backend that took it (one more round
// trip, on that path only): PostgreSQL frees a session's locks when its
// backend exits, and the control session's can exit between the two
// probes (its idle_session_timeout, SessionTimeout, fired while the lock
// session was slow to connect on a loaded machine: make test-matrix
// refused PostgreSQL 14 so, "two sessions ... were both granted one
// advisory lock", in TestStopRacingHeartbeatFreesLocks, whose 10 ms
// heartbeat makes SessionTimeout 1.02 s). Such a check proved nothing
// and is run again, up to probeTries times.
func (c *Coordinator) checkLocksExclude(ctx context.Context) error {
	for try := 1; ; try++ {
		err := c.probeLocksExclude(ctx)
		if !errors.Is(err, errProbeInconclusive) || try == probeTries {
			return err
		}
		c.log.Debug("pgcoord: advisory-lock probe inconclusive; checking again", slog.Any("err", err))
	}
}

// probeTries bounds the checks Start runs when the control session's
// backend keeps ending under it.
const probeTries = 3

// errProbeInconclusive: the control session's backend ended during the
// check, and its probe key with it.
var errProbeInconclusive = errors.New("the control session's backend ended during the check")

func (c *Coordinator) probeLocksExclude(ctx context.Context) error {
	lockSess := c.lockSs[0]
	hi, lo := probeKey(c.memberID)
	var first, second db.ProbeAdvisoryLockRow
	err := c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		if c.control.backendPID == lockSess.backendPID {
			return nil
		}
		var err error
		first, err = c.q.ProbeAdvisoryLock(ctx, simpleProtocol{conn}, db.ProbeAdvisoryLockParams{Pid: c.control.backendPID, Key1: hi, Key2: lo})
		return err
	})
	if err != nil || c.control.backendPID == lockSess.backendPID {
		return probeError(err)
	}
	if first.Pid != c.control.backendPID {
		return fmt.Errorf("%w: the control session's statements ran on backends %d and %d; %s",
			ErrSessionLocksUnsupported, c.control.backendPID, first.Pid, poolerAdvice)
	}
	if !first.Locked {
		// Someone holds the probe key: another Start of this member id at
		// this very moment (the member lock refuses one of them next).
		// The check cannot tell anything here; carry on.
		c.log.Debug("pgcoord: advisory-lock probe key busy; check skipped")
		return nil
	}
	if c.afterProbe != nil {
		c.afterProbe()
	}
	err = lockSess.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		second, err = c.q.ProbeAdvisoryLock(ctx, simpleProtocol{conn}, db.ProbeAdvisoryLockParams{Pid: lockSess.backendPID, Key1: hi, Key2: lo})
		return err
	})
	if err != nil {
		return probeError(err)
	}
	switch {
	case second.Pid != lockSess.backendPID:
		return fmt.Errorf("%w: the lock session's statements ran on backends %d and %d; %s",
			ErrSessionLocksUnsupported, lockSess.backendPID, second.Pid, poolerAdvice)
	case second.Locked:
		// Still the backend that took the key? Asked with the same probe
		// (the key taken again by its holder: granted), which any server
		// that answered the first one answers.
		err := c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			if c.control.backendPID != first.Pid {
				return errProbeInconclusive // redialled
			}
			again, err := c.q.ProbeAdvisoryLock(ctx, simpleProtocol{conn}, db.ProbeAdvisoryLockParams{Pid: first.Pid, Key1: hi, Key2: lo})
			if err == nil && (again.Pid != first.Pid || !again.Locked) {
				err = errProbeInconclusive
			}
			return err
		})
		if errors.Is(err, errProbeInconclusive) {
			// The lock session holds the probe key now: its connection
			// goes, so that the next check starts clean.
			if lerr := lockSess.lock(ctx); lerr != nil {
				return probeError(lerr)
			}
			lockSess.drop()
			lockSess.unlock()
			return fmt.Errorf("pgcoord: checking that advisory locks exclude: %w", err)
		}
		if err != nil {
			return probeError(err)
		}
		return fmt.Errorf("%w: two sessions (backends %d and %d) were both granted one advisory lock on %q; %s",
			ErrAdvisoryLocksUnsupported, first.Pid, second.Pid, first.Version, fakeLocksAdvice)
	}
	return nil
}

// refuseAnnouncedFakeLocks refuses a server that says, when a connection
// opens, that it is CockroachDB (the crdb_version parameter), whose
// advisory-lock functions succeed without locking: no round trip.
func refuseAnnouncedFakeLocks(conn *pgx.Conn) error {
	if v := conn.PgConn().ParameterStatus("crdb_version"); v != "" {
		return fmt.Errorf("%w: the server is %s, whose advisory-lock functions succeed without locking; %s",
			ErrAdvisoryLocksUnsupported, v, fakeLocksAdvice)
	}
	return nil
}

// fakeLocksAdvice ends every ErrAdvisoryLocksUnsupported message.
const fakeLocksAdvice = "pgcoord needs PostgreSQL (14 or later, or a managed PostgreSQL service); on this server use its own primitives (CockroachDB: SELECT ... FOR UPDATE on a row per name)"

func probeError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pgcoord: checking that advisory locks exclude: %w", err)
}
