package pgcoord

// The member: its row in pgcoord.members and the member lock that makes a
// second live member with the same id fail, and the checks Start makes
// before registering (the schema is there; session locks stay put).

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/schemaobj"
)

// checkSchema makes sure the migrated schema is there, so that
// SkipMigrations on an empty database fails with advice, not with a missing
// relation deep inside an Acquire.
func (c *Coordinator) checkSchema(ctx context.Context) error {
	return c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		present, err := c.q.SchemaPresent(ctx, conn)
		if err != nil {
			return fmt.Errorf("pgcoord: checking schema: %w", err)
		}
		if !present {
			return fmt.Errorf("%w: schema pgcoord not found; run `pgcoord migrate` or pgcoord.Migrate(ctx, connString), or leave SkipMigrations false", ErrSchemaMissing)
		}
		v, err := c.q.SchemaVersion(ctx, conn)
		if err != nil {
			return fmt.Errorf("pgcoord: checking schema version: %w", err)
		}
		if isPreRelease(v.Version) {
			return preReleaseError(v.Version)
		}
		if v.Dirty || v.Version < int64(schemaVersion) {
			return fmt.Errorf("%w: schema pgcoord is at version %d (dirty=%v), this pgcoord needs %d; run `pgcoord migrate`",
				ErrSchemaMissing, v.Version, v.Dirty, schemaVersion)
		}
		missing, err := schemaobj.Missing(ctx, conn)
		if err != nil {
			return fmt.Errorf("pgcoord: checking schema objects: %w", err)
		}
		if len(missing) > 0 {
			return missingObjectsError(v.Version, missing)
		}
		return nil
	})
}

// missingObjectsError is ErrSchemaMissing for a schema at version v that
// lacks objects (changed by hand after migrating: migrating again would
// not bring them back, as the version says they are there).
func missingObjectsError(v int64, missing []string) error {
	return fmt.Errorf("%w: schema pgcoord is at version %d but lacks %s; it was changed after migrating: "+
		"restore them from pgcoord's migrations, or stop its coordinators, DROP SCHEMA pgcoord CASCADE and run `pgcoord migrate`",
		ErrSchemaMissing, v, strings.Join(missing, ", "))
}

// registerMember takes the member lock on the control session and writes the
// member row. restart begins a new life (Start); a reconnect keeps started_at.
func (c *Coordinator) registerMember(ctx context.Context, restart bool) error {
	return c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return c.registerMemberLocked(ctx, conn, restart)
	})
}

func (c *Coordinator) registerMemberLocked(ctx context.Context, conn *pgx.Conn, restart bool) error {
	sent := monoNow()
	ok, err := c.q.TryMemberLock(ctx, conn, db.TryMemberLockParams{Key1: c.memberHi, Key2: c.memberLo})
	if err != nil {
		return fmt.Errorf("pgcoord: taking member lock: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: %q is running elsewhere (see pgcoord.live_members)", ErrMemberExists, c.memberID)
	}
	if restart {
		// A new life: what a previous one under this member id left (group
		// memberships, wait tickets) goes, before the member row is live
		// again and readers would count it.
		c.forgetGroups(ctx, conn)
		c.joined.reset()
		c.forgetQueue(ctx, conn)
	}
	host, _ := os.Hostname()
	err = c.q.RegisterMember(ctx, conn, db.RegisterMemberParams{
		MemberID:         c.memberID,
		Prefix:           c.cfg.Prefix,
		AgentID:          c.cfg.AgentID,
		Hostname:         host,
		Pid:              int32(os.Getpid()),
		HeartbeatSeconds: c.cfg.HeartbeatInterval.Seconds(),
		SessionTag:       c.sessionTag,
		MemberKey:        c.memberKey,
		Restart:          restart,
	})
	if err != nil {
		return fmt.Errorf("pgcoord: registering member: %w", err)
	}
	c.registered.Store(true)
	c.beatHeard(sent) // the row's last_heartbeat is now()
	return nil
}

// poolerAdvice ends every ErrSessionLocksUnsupported message.
const poolerAdvice = "a transaction-pooling proxy (PgBouncer pool_mode=transaction) is in the way: connect directly or through session pooling, or take transaction-scoped locks through the proxy with pgcoord.AcquireTx"

// checkDistinctBackends refuses connections on which session advisory
// locks are not locks. Behind a transaction-pooling proxy, client
// connections share server sessions between transactions, so the
// coordinator's sessions (each asked for its backend pid when it connected)
// report the same backend.
func (c *Coordinator) checkDistinctBackends() error {
	seen := map[int32]bool{}
	for _, s := range append([]*session{c.control}, c.lockSs...) {
		if s.backendPID == 0 {
			continue // not opened yet
		}
		if seen[s.backendPID] {
			return fmt.Errorf("%w: two sessions share server backend %d; %s", ErrSessionLocksUnsupported, s.backendPID, poolerAdvice)
		}
		seen[s.backendPID] = true
	}
	return nil
}

// checkMemberLockStays checks, in a statement of its own, that the backend
// that took the member lock still holds it: behind a transaction-pooling
// proxy the next statement may run on another backend.
func (c *Coordinator) checkMemberLockStays(ctx context.Context) error {
	return c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		held, err := c.q.HoldsMemberLock(ctx, conn, db.HoldsMemberLockParams{Key1: c.memberHi, Key2: c.memberLo})
		if err != nil {
			return err
		}
		if !held {
			return fmt.Errorf("%w: the member lock vanished between two statements on one connection; %s", ErrSessionLocksUnsupported, poolerAdvice)
		}
		return nil
	})
}
