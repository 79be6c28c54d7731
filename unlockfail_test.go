package pgcoord

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// An unlock that fails while its connection stays open must not leave the
// lock held by nobody: the session is dropped, which frees it, on every
// path (a synchronous Release on a lock session alone or in a batch, on a
// wait session, an asynchronous Release, and the undo of a failed try).
// The failure is real and deterministic: the coordinator runs as a role
// whose EXECUTE on pg_advisory_unlock(bigint) is revoked while it holds
// locks, so the server answers the unlock with an error (42501) and keeps
// the connection. It runs on a server of its own: the revoke is per
// database and would hit other tests' roles.
func TestFailedUnlockFreesLock(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	admin, err := pgxpool.New(ctx(t), srv.URL())
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	role := appRoleOn(t, srv.URL(), "")
	appURL := withUser(t, srv.URL(), role, "app-pw")
	exec := func(sql string) {
		t.Helper()
		_, err := admin.Exec(ctx(t), sql)
		require.NoError(t, err, sql)
	}
	breakUnlock := func() {
		// Only the grant to PUBLIC lets the role run it.
		exec(`REVOKE EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock(bigint) FROM PUBLIC`)
		t.Cleanup(func() {
			_, _ = admin.Exec(context.Background(), `GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock(bigint) TO PUBLIC`)
		})
	}
	mendUnlock := func() { exec(`GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock(bigint) TO PUBLIC`) }
	coord := func(p string, mods ...func(*Config)) *Coordinator {
		return newCoord(t, p, append([]func(*Config){func(cfg *Config) {
			cfg.ConnString = appURL
		}}, mods...)...)
	}
	// other is a superuser's coordinator: its unlocks keep working.
	otherOf := func(p string) *Coordinator {
		return newCoord(t, p, func(cfg *Config) { cfg.ConnString = srv.URL() })
	}
	// requireFreeNow: the lock is free for another member when the
	// release returned (no waiting: nothing may hold it for nobody).
	requireFreeNow := func(o *Coordinator, name string) {
		t.Helper()
		l := o.GetLock(name)
		ok, err := l.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		require.True(t, ok, "%q still held after its release returned", name)
		require.NoError(t, l.Release(ctx(t)))
	}

	t.Run("lock session", func(t *testing.T) {
		p := testPrefix(t)
		c, o := coord(p), otherOf(p)
		a, b := c.GetLock("a"), c.GetLock("b")
		mustAcquire(t, a, NoWait)
		mustAcquire(t, b, NoWait)
		breakUnlock()
		require.NoError(t, a.Release(ctx(t)), "released by dropping the session")
		requireFreeNow(o, "a")
		require.True(t, isClosed(b.Lost()), "b went with the dropped session")
		require.ErrorIs(t, b.Release(ctx(t)), ErrLockLost)
		requireFreeNow(o, "b")
		mendUnlock()
		mustAcquire(t, a, NoWait) // the session comes back
		require.NoError(t, a.Release(ctx(t)))
	})

	// When only Unlock's wait-marker step fails (as when the lock table is
	// full: the unlock ran, the marker's try found no room), a plain unlock
	// retried on the same connection succeeds: the lock is free and the
	// session, with its other holds, is kept.
	t.Run("retried", func(t *testing.T) {
		p := testPrefix(t)
		c, o := coord(p), otherOf(p)
		a, b := c.GetLock("a"), c.GetLock("b")
		mustAcquire(t, a, NoWait)
		mustAcquire(t, b, NoWait)
		fn := `pg_catalog.pg_try_advisory_xact_lock(integer, integer)`
		exec(`REVOKE EXECUTE ON FUNCTION ` + fn + ` FROM PUBLIC`)
		defer exec(`GRANT EXECUTE ON FUNCTION ` + fn + ` TO PUBLIC`)
		pid := b.BackendPID()
		require.NoError(t, a.Release(ctx(t)))
		requireFreeNow(o, "a")
		require.False(t, isClosed(b.Lost()), "b was lost with a session that should have been kept")
		require.Equal(t, pid, b.BackendPID())
		require.NoError(t, b.Release(ctx(t)))
	})

	t.Run("batch", func(t *testing.T) {
		p := testPrefix(t)
		c, o := coord(p), otherOf(p)
		names := []string{"x", "y", "z"}
		var locks []*Lock
		for _, n := range names {
			l := c.GetLock(n)
			mustAcquire(t, l, NoWait)
			locks = append(locks, l)
		}
		kept := c.GetLock("kept")
		mustAcquire(t, kept, NoWait)
		breakUnlock()
		// Hold the session so the three unlocks queue into one batch.
		s := c.lockSs[0]
		require.NoError(t, s.lock(ctx(t)))
		errs := make([]error, len(locks))
		var wg sync.WaitGroup
		for i, l := range locks {
			wg.Go(func() { errs[i] = l.Release(ctx(t)) })
		}
		require.Eventually(t, func() bool {
			s.bmu.Lock()
			defer s.bmu.Unlock()
			return len(s.batch.queue) == len(locks)
		}, 10*time.Second, time.Millisecond)
		s.unlock()
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "release of %q", names[i])
			requireFreeNow(o, names[i])
		}
		require.True(t, isClosed(kept.Lost()), "kept went with the dropped session")
		mendUnlock()
	})

	t.Run("wait session", func(t *testing.T) {
		p := testPrefix(t)
		c, o := coord(p), otherOf(p)
		blocker := o.GetLock("w")
		mustAcquire(t, blocker, NoWait)
		w := c.GetLock("w")
		res := make(chan error, 1)
		go func() {
			ok, err := w.Acquire(ctx(t), Wait)
			if err == nil && !ok {
				err = fmt.Errorf("Wait returned false")
			}
			res <- err
		}()
		require.Eventually(t, func() bool {
			var n int
			require.NoError(t, admin.QueryRow(ctx(t),
				`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n))
			return n == 1
		}, 10*time.Second, 5*time.Millisecond)
		require.NoError(t, blocker.Release(ctx(t)))
		require.NoError(t, <-res)
		require.Equal(t, sessionWait, w.hold.sess.kind)
		breakUnlock()
		require.NoError(t, w.Release(ctx(t)))
		requireFreeNow(o, "w")
		mendUnlock()
	})

	t.Run("async release", func(t *testing.T) {
		p := testPrefix(t)
		c, o := coord(p, func(cfg *Config) { cfg.AsyncRelease = true }), otherOf(p)
		a, b := c.GetLock("a"), c.GetLock("b")
		mustAcquire(t, a, NoWait)
		mustAcquire(t, b, NoWait)
		breakUnlock()
		require.NoError(t, a.Release(ctx(t)))
		// The unlock leaves within asyncReleaseDelay; its failure drops
		// the session and closes Lost of the released hold, late.
		requireClosedWithin(t, a.Lost(), 5*time.Second, "a's late loss")
		requireClosedWithin(t, b.Lost(), 5*time.Second, "b went with the dropped session")
		require.Eventually(t, func() bool {
			ok, err := o.GetLock("a").Acquire(ctx(t), NoWait)
			require.NoError(t, err)
			return ok
		}, 5*time.Second, time.Millisecond)
		mendUnlock()
	})

	t.Run("undo of a failed try", func(t *testing.T) {
		p := testPrefix(t)
		c, o := coord(p), otherOf(p)
		kept := c.GetLock("kept")
		mustAcquire(t, kept, NoWait)
		// The try takes the lock, then nextval fails: the try must be
		// undone, and the undo fails too.
		exec(fmt.Sprintf(`REVOKE USAGE ON SEQUENCE pgcoord.fencing_token FROM %s`, role))
		breakUnlock()
		ok, err := c.GetLock("t").Acquire(ctx(t), NoWait)
		require.False(t, ok)
		require.Error(t, err)
		// The failed acquire closed the connection that held "t": the
		// server frees it as that backend exits.
		ot := o.GetLock("t")
		require.Eventually(t, func() bool {
			ok, err := ot.Acquire(ctx(t), NoWait)
			require.NoError(t, err)
			return ok
		}, 5*time.Second, time.Millisecond, "the failed try's lock was never freed")
		require.NoError(t, ot.Release(ctx(t)))
		require.True(t, isClosed(kept.Lost()), "kept went with the dropped session")
		mendUnlock()
		exec(fmt.Sprintf(`GRANT USAGE ON SEQUENCE pgcoord.fencing_token TO %s`, role))
		mustAcquire(t, c.GetLock("t"), NoWait)
	})
}
