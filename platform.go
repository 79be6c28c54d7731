package pgcoord

import (
	"context"
	"fmt"

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
func (c *Coordinator) checkLocksExclude(ctx context.Context) error {
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
