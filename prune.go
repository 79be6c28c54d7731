package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord/db"
)

// Retention bounds of Config.Retention and Coordinator.Prune.
const (
	// DefaultRetention is how long stopped and silent members' rows, and
	// names nobody used, are kept by default.
	DefaultRetention = 24 * time.Hour
	// MinRetention is the shortest retention: a coordinator registers the
	// names it uses again every 10 minutes, and a name is pruned only after
	// a retention without registration, so this margin is what keeps a
	// name in use from being pruned (and its collision detection lost).
	MinRetention = time.Hour
)

// PruneResult counts what one prune deleted.
type PruneResult struct {
	// Members is the number of member rows deleted: stopped, or silent
	// (crashed, cut off) for longer than the retention.
	Members int64
	// Names is the number of lock-name registrations deleted: not used for
	// longer than the retention, and not held or waited for now.
	Names int64
	// GroupMembers is the number of group memberships deleted: those of
	// members whose row is gone (pruned now or before).
	GroupMembers int64
	// Fences is the number of recorded fencing tokens deleted
	// (pgcoord.fences, Config.Fencing and AcquireFencedTx): those of keys
	// whose last token is older than the retention and which nobody holds
	// or waits for.
	Fences int64
	// SemaphoreLimits is the number of semaphore limits deleted
	// (pgcoord.semaphores): those not used for longer than the retention,
	// with no slot held or waited for.
	SemaphoreLimits int64
	// Elections is the number of elections' recorded last terms deleted
	// (pgcoord.elections): those begun before the retention whose leader
	// has not been heard from for as long and whose lock nobody holds or
	// waits for.
	Elections int64
}

// Prune deletes, for every prefix, the rows of members stopped or silent
// for longer than olderThan (and their group memberships), and the
// registrations in pgcoord.locks of names nobody has used for that long and
// nobody holds or waits for, and likewise the recorded fencing tokens
// (pgcoord.fences), semaphore limits (pgcoord.semaphores) and elections'
// last terms (pgcoord.elections) of names unused for that long. A running
// member's row and a name in use are never deleted, and a name pruned while
// a coordinator registers it is registered again, so collision detection
// holds for every name in use. olderThan must be at least MinRetention. The
// coordinator does this by itself every Retention/4 (at most hourly) unless
// Config.Retention is negative; `pgcoord prune` does it from the command
// line.
func (c *Coordinator) Prune(ctx context.Context, olderThan time.Duration) (PruneResult, error) {
	if olderThan < MinRetention {
		return PruneResult{}, fmt.Errorf("%w: Prune: retention %v is below MinRetention %v", ErrInvalidConfig, olderThan, MinRetention)
	}
	if !c.running() {
		return PruneResult{}, ErrNotStarted
	}
	var res PruneResult
	// On the control session, detached: a cancelled statement would close
	// the session that holds the member lock.
	err := c.control.detached(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		res, err = pruneOn(ctx, c.q, conn, olderThan)
		return err
	})
	return res, err
}

// pruneOn runs the deletes on conn; `pgcoord prune` calls it through
// PruneConn.
func pruneOn(ctx context.Context, q *db.Queries, conn db.DBTX, olderThan time.Duration) (PruneResult, error) {
	var res PruneResult
	var err error
	if res.Members, err = q.PruneMembers(ctx, conn, olderThan.Seconds()); err != nil {
		return res, fmt.Errorf("pgcoord: pruning members: %w", err)
	}
	if res.Names, err = q.PruneLockNames(ctx, conn, olderThan.Seconds()); err != nil {
		return res, fmt.Errorf("pgcoord: pruning lock names: %w", err)
	}
	// A role granted nothing on group_members (it uses no groups) has no
	// memberships to prune.
	if res.GroupMembers, err = q.PruneGroupMembers(ctx, conn); err != nil && !insufficientPrivilege(err) {
		return res, fmt.Errorf("pgcoord: pruning group memberships: %w", err)
	}
	// Roles granted no DELETE on fences, semaphores or elections (grants
	// of before v0.1.0, or none of these primitives used) have nothing to
	// prune there; another role's `pgcoord prune` can.
	if res.Fences, err = q.PruneFences(ctx, conn, olderThan.Seconds()); err != nil && !insufficientPrivilege(err) {
		return res, fmt.Errorf("pgcoord: pruning fences: %w", err)
	}
	if res.SemaphoreLimits, err = q.PruneSemaphoreLimits(ctx, conn, olderThan.Seconds()); err != nil && !insufficientPrivilege(err) {
		return res, fmt.Errorf("pgcoord: pruning semaphore limits: %w", err)
	}
	if res.Elections, err = q.PruneElections(ctx, conn, olderThan.Seconds()); err != nil && !insufficientPrivilege(err) {
		return res, fmt.Errorf("pgcoord: pruning elections: %w", err)
	}
	if _, err = q.PruneLockSince(ctx, conn); err != nil {
		return res, fmt.Errorf("pgcoord: pruning lock_since: %w", err)
	}
	// A role without rights on wait_queue has waits that are not queued
	// across members (see queue.go), and so no tickets to prune.
	if _, err = q.PruneDeadTickets(ctx, conn); err != nil && !insufficientPrivilege(err) {
		return res, fmt.Errorf("pgcoord: pruning wait_queue: %w", err)
	}
	return res, nil
}

// PruneConn is Coordinator.Prune on a connection of the caller's, for tools
// that run no coordinator (`pgcoord prune`).
func PruneConn(ctx context.Context, conn *pgx.Conn, olderThan time.Duration) (PruneResult, error) {
	if olderThan < MinRetention {
		return PruneResult{}, fmt.Errorf("%w: Prune: retention %v is below MinRetention %v", ErrInvalidConfig, olderThan, MinRetention)
	}
	return pruneOn(ctx, db.New(), conn, olderThan)
}

// pruneLoop prunes every Retention/4, at most hourly, the first time after
// a random part of that, so members started together do not prune together.
func (c *Coordinator) pruneLoop() {
	defer close(c.pruneDone)
	if c.cfg.Retention < 0 {
		return
	}
	every := min(c.cfg.Retention/4, time.Hour)
	t := time.NewTimer(rand.N(every))
	defer t.Stop()
	for {
		select {
		case <-c.runCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(ownWork(c.runCtx), time.Minute)
		res, err := c.Prune(ctx, c.cfg.Retention)
		cancel()
		switch {
		case err != nil && c.runCtx.Err() == nil:
			c.log.Warn("pgcoord: pruning failed", "err", err)
		case res.Members > 0 || res.Names > 0 || res.GroupMembers > 0 || res.Fences > 0 || res.SemaphoreLimits > 0 || res.Elections > 0:
			c.log.Info("pgcoord: pruned", slog.Int64("members", res.Members), slog.Int64("names", res.Names),
				slog.Int64("group_members", res.GroupMembers), slog.Int64("fences", res.Fences),
				slog.Int64("semaphore_limits", res.SemaphoreLimits), slog.Int64("elections", res.Elections),
				slog.Duration("retention", c.cfg.Retention))
		}
		t.Reset(every)
	}
}

// insufficientPrivilege reports SQLSTATE 42501: the role lacks a grant.
func insufficientPrivilege(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}
