package pgcoord

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// TestRefusedHoldInFailedBatch: a lock session's batch in which one
// statement failed (the connection staying open) and a hold was refused
// (the session's lease ran out as the holds were recorded) is not sent
// again as a whole. Before the fix the refusal dropped the connection
// inside the batch's run, so doLocked sent every op again on a new one:
// a try whose hold had been recorded, then ended by the lease's expiry,
// took its lock again for that ended hold, which Release never unlocks.
// The name stayed held on the session for nobody.
//
// The batch is [try a, try b, unlock d]: it queues behind a try stuck in
// nextval (an open ALTER SEQUENCE holds the fencing sequence); d's unlock
// fails at its executor's start (EXECUTE on pg_notify, which Unlock may
// call, is revoked from the coordinator's role); the hook expires the
// session's lease as b's hold is recorded, after a's.
//
// Not parallel: testHookAddHold is global.
func TestRefusedHoldInFailedBatch(t *testing.T) {
	srv := ownServer(t, nil)
	admin, err := pgxpool.New(ctx(t), srv.URL())
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	role := appRoleOn(t, srv.URL(), "")
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) {
		cfg.ConnString = withUser(t, srv.URL(), role, "app-pw")
		// No heartbeat's look at the lease but the hook's.
		cfg.HeartbeatInterval = 10 * time.Second
		cfg.SessionTimeout = 60 * time.Second
	})
	other := newCoord(t, p, func(cfg *Config) { cfg.ConnString = srv.URL() })
	stuck, a, b, d := c.GetLock("stuck"), c.GetLock("a"), c.GetLock("b"), c.GetLock("d")
	// Register the names (a registration writes) and prepare the try.
	for _, l := range []*Lock{stuck, a, b} {
		mustAcquire(t, l, NoWait)
		require.NoError(t, l.Release(ctx(t)))
	}
	mustAcquire(t, d, NoWait)
	s := c.lockSession(a.key)
	require.Same(t, s, c.lockSession(b.key))
	require.Same(t, s, c.lockSession(d.key))
	queued := func() int {
		s.bmu.Lock()
		defer s.bmu.Unlock()
		return len(s.batch.queue)
	}

	_, err = admin.Exec(ctx(t), `REVOKE EXECUTE ON FUNCTION pg_catalog.pg_notify(text, text) FROM PUBLIC`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `GRANT EXECUTE ON FUNCTION pg_catalog.pg_notify(text, text) TO PUBLIC`)
	})
	seq := connect(t, srv.URL())
	_, err = seq.Exec(ctx(t), `BEGIN; ALTER SEQUENCE pgcoord.fencing_token CACHE 1`)
	require.NoError(t, err)

	var adds atomic.Int32
	hook := func(hs *session) {
		// stuck's hold, a's, then b's: the lease runs out at b's.
		if hs == s && adds.Add(1) == 3 {
			s.expire(s.gen.Load())
		}
	}
	testHookAddHold.Store(&hook)
	defer testHookAddHold.Store(nil)

	var wg sync.WaitGroup
	results := make(map[string]error)
	var mu sync.Mutex
	run := func(name string, f func() error) {
		wg.Go(func() {
			err := f()
			mu.Lock()
			results[name] = err
			mu.Unlock()
		})
	}
	acquire := func(l *Lock) func() error {
		return func() error {
			ok, err := l.Acquire(ctx(t), NoWait)
			if err == nil && !ok {
				t.Errorf("%s: busy", l.Name())
			}
			return err
		}
	}
	run("stuck", acquire(stuck))
	require.Eventually(t, func() bool {
		var waiting bool
		_ = admin.QueryRow(ctx(t), `SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted)`, s.backendPID).Scan(&waiting)
		return waiting
	}, 10*time.Second, 5*time.Millisecond, "the stuck try never waited for the sequence")
	run("a", acquire(a))
	require.Eventually(t, func() bool { return queued() == 1 }, 10*time.Second, time.Millisecond)
	run("b", acquire(b))
	require.Eventually(t, func() bool { return queued() == 2 }, 10*time.Second, time.Millisecond)
	run("d", func() error { return d.Release(ctx(t)) })
	require.Eventually(t, func() bool { return queued() == 3 }, 10*time.Second, time.Millisecond)
	_, err = seq.Exec(ctx(t), `COMMIT`)
	require.NoError(t, err)
	wg.Wait()
	t.Logf("results: %v", results)
	require.EqualValues(t, 3, min(adds.Load(), 3), "the hook never expired the lease")

	// a was granted, then lost with the expired connection: told so.
	require.NoError(t, results["a"])
	require.True(t, isClosed(a.Lost()), "a's hold went with the expired connection")
	require.ErrorIs(t, a.Release(ctx(t)), ErrLockLost)
	// And nothing holds it for nobody.
	o := other.GetLock("a")
	ok, err := o.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok, "a is held on the lock session for nobody")
	require.NoError(t, o.Release(ctx(t)))
	// b was refused, then taken again on a new connection: really held.
	require.NoError(t, results["b"])
	var pid int32
	require.NoError(t, admin.QueryRow(ctx(t), `SELECT backend_pid FROM pgcoord.held_locks WHERE key = $1 AND granted`, b.Key()).Scan(&pid))
	require.Equal(t, s.backendPID, pid)
	require.NoError(t, b.Release(ctx(t)))
}
