package pgcoord

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgcoord/pgcoord/db"
	"github.com/stretchr/testify/require"
)

// backdate makes rows look older than they are, as if hours had passed.
func backdate(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	_, err := conn.Exec(ctx(t), sql, args...)
	require.NoError(t, err)
}

func memberRowExists(t *testing.T, conn *pgx.Conn, id string) bool {
	var n int
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.members WHERE member_id = $1`, id).Scan(&n))
	return n == 1
}

func nameRow(t *testing.T, conn *pgx.Conn, key int64) string {
	var name string
	err := conn.QueryRow(ctx(t), `SELECT name FROM pgcoord.locks WHERE key = $1`, key).Scan(&name)
	if err == pgx.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	return name
}

// Stopped and silent members older than the retention go; running ones and
// recent ones stay, however old their heartbeat looks.
func TestPruneMembers(t *testing.T) {
	t.Parallel()
	_, prefix, conn, mk := pruneDatabase(t)
	pruner := mk("pruner")
	running := mk("running")
	oldStopped := mk("old-stopped")
	newStopped := mk("new-stopped")
	require.NoError(t, oldStopped.Stop(ctx(t)))
	require.NoError(t, newStopped.Stop(ctx(t)))
	// A crashed member: a row nobody's member lock covers, never stopped.
	_, err := conn.Exec(ctx(t), `INSERT INTO pgcoord.members (member_id, agent_id, session_tag, member_key, last_heartbeat)
		VALUES ($1, 'crashed', 'x', 42, now() - interval '3 hours')`, prefix+"crashed")
	require.NoError(t, err)
	backdate(t, conn, `UPDATE pgcoord.members SET stopped_at = now() - interval '2 hours' WHERE member_id = $1`, oldStopped.MemberID())
	// A running member whose heartbeat looks old (its lock says it runs).
	backdate(t, conn, `UPDATE pgcoord.members SET last_heartbeat = now() - interval '5 hours' WHERE member_id = $1`, running.MemberID())

	_, err = pruner.Prune(ctx(t), 30*time.Minute)
	require.ErrorIs(t, err, ErrInvalidConfig, "below MinRetention")
	res, err := pruner.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Members)
	require.False(t, memberRowExists(t, conn, oldStopped.MemberID()))
	require.False(t, memberRowExists(t, conn, prefix+"crashed"))
	require.True(t, memberRowExists(t, conn, newStopped.MemberID()))
	require.True(t, memberRowExists(t, conn, running.MemberID()))
	// The running member goes on heartbeating; a new one with a pruned id starts.
	require.NoError(t, running.Heartbeat(ctx(t)))
	mk("old-stopped")
}

// A name goes once nobody used it for the retention and nobody holds or
// waits for it; a coordinator that uses it again registers it again.
func TestPruneLockNames(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	conn := connect(t, dbURL)
	prefix := testPrefix(t)
	mods := func(cfg *Config) { cfg.ConnString, cfg.Retention = dbURL, -1 }
	a, b := newCoord(t, prefix, mods), newCoord(t, prefix, mods)
	unused, held, waited, recent := a.GetLock("unused"), a.GetLock("held"), a.GetLock("waited"), a.GetLock("recent")
	for _, l := range []*Lock{unused, held, waited, recent} {
		mustAcquire(t, l, NoWait)
	}
	for _, l := range []*Lock{unused, recent} {
		require.NoError(t, l.Release(ctx(t)))
	}
	// b waits on the server for "waited".
	waiter := b.GetLock("waited")
	got := make(chan error, 1)
	go func() {
		ok, err := waiter.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = ErrLockAcquireFailed
		}
		got <- err
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.held_locks WHERE key = $1 AND NOT granted`, waiter.Key()).Scan(&n))
		return n == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, waited.Release(ctx(t))) // the waiter now holds it
	require.NoError(t, <-got)

	backdate(t, conn, `UPDATE pgcoord.locks SET last_used = now() - interval '2 hours' WHERE key <> $1`, recent.Key())
	res, err := a.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Names)
	require.Empty(t, nameRow(t, conn, unused.Key()), "unused for the retention and free: pruned")
	require.Equal(t, prefix+"held", nameRow(t, conn, held.Key()), "held: kept")
	require.Equal(t, prefix+"waited", nameRow(t, conn, waited.Key()), "held after a wait: kept")
	require.Equal(t, prefix+"recent", nameRow(t, conn, recent.Key()), "used lately: kept")

	// A coordinator using the name again registers it again.
	c := newCoord(t, prefix, mods)
	mustAcquire(t, c.GetLock("unused"), NoWait)
	require.Equal(t, prefix+"unused", nameRow(t, conn, unused.Key()))
}

// Prune racing registration: whatever the interleaving, once a register
// returns, the name owns its key and a colliding name is refused, so
// collision detection holds for names in use.
func TestPruneRacesRegister(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	prefix := testPrefix(t)
	c := newCoord(t, prefix, func(cfg *Config) { cfg.ConnString, cfg.Retention = dbURL, -1 })
	const names = 8
	locks := make([]*Lock, names)
	for i := range locks {
		locks[i] = c.GetLock(string(rune('a' + i)))
	}
	pruneConn, checkConn := connect(t, dbURL), connect(t, dbURL)

	stop := make(chan struct{})
	var pruned atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // prunes as fast as it can
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res, err := PruneConn(context.Background(), pruneConn, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			pruned.Add(res.Names)
		}
	}()

	deadline := time.Now().Add(3 * time.Second)
	rounds := 0
	for ; time.Now().Before(deadline) || pruned.Load() == 0; rounds++ {
		require.Less(t, rounds, 100000, "prune never deleted a name")
		// An hour passes for every name, and the coordinator's cache forgets.
		backdate(t, checkConn, `UPDATE pgcoord.locks SET last_used = now() - interval '2 hours' WHERE name LIKE $1 || '%'`, prefix)
		c.names.mu.Lock()
		clear(c.names.names)
		c.names.mu.Unlock()
		for _, l := range locks {
			require.NoError(t, c.register(ctx(t), l))
			// Another name with the same key (a collision, forged) must be
			// refused now, exactly as RegisterLockName refuses one.
			var owner string
			require.NoError(t, checkConn.QueryRow(ctx(t), `WITH ins AS (
				INSERT INTO pgcoord.locks (key, name) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING name)
				SELECT name FROM ins UNION ALL SELECT name FROM pgcoord.locks WHERE key = $1 LIMIT 1`,
				l.Key(), "collider-"+l.Name()).Scan(&owner))
			require.Equal(t, l.full, owner, "round %d: %s lost its registration to a collider", rounds, l.Name())
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rounds, %d names pruned and registered again", rounds, pruned.Load())
	require.Positive(t, pruned.Load())
}

// A control batch of registrations (ctlbatch.go: one implicit transaction,
// its statements in key order, each registration locking its name's row
// until the batch ends) racing a prune of those names: the prune skips the
// rows the batch locked instead of waiting for them. It used to wait, having
// locked (deleted) other rows first in an order of its own (the heap's on
// 14 and 15, a hash table's from 16 on: Hash Right Anti Join), and the
// batch's next registration then waited for one of those: a deadlock, one
// side failing with SQLSTATE 40P01.
func TestPruneSkipsRowsARegistrationLocked(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	prefix := testPrefix(t)
	setup, batch, pruner := connect(t, dbURL), connect(t, dbURL), connect(t, dbURL)
	// Names unused for two hours; the batch's first key is the smallest
	// and its row the last in the heap, so a prune in heap order reaches
	// it last.
	const n = 16
	keys, names := make([]int64, n), make([]string, n)
	for i := range keys {
		keys[i], names[i] = int64(i+1)<<40|12345, fmt.Sprintf("%sname-%02d", prefix, i)
	}
	for i := n - 1; i >= 0; i-- {
		_, err := setup.Exec(ctx(t), `INSERT INTO pgcoord.locks (key, name, last_used) VALUES ($1, $2, now() - interval '2 hours')`, keys[i], names[i])
		require.NoError(t, err)
	}
	q := db.New()
	register := func(tx pgx.Tx, i int) {
		got, err := q.RegisterLockName(ctx(t), tx, db.RegisterLockNameParams{Key: keys[i], Name: names[i]})
		require.NoError(t, err, "registering %s in the batch", names[i])
		require.Equal(t, names[i], got)
	}
	tx, err := batch.Begin(ctx(t))
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	register(tx, 0) // the batch's first statement: the row of keys[0] is locked

	done := make(chan error, 1)
	var res PruneResult
	go func() {
		var err error
		res, err = PruneConn(context.Background(), pruner, time.Hour)
		done <- err
	}()
	// Until the prune has finished, or waits for a lock.
	var pruneErr error
	finished := false
	deadline := time.Now().Add(10 * time.Second)
	for !finished {
		select {
		case pruneErr = <-done:
			finished = true
			continue
		default:
		}
		var waiting bool
		require.NoError(t, setup.QueryRow(ctx(t), `SELECT coalesce(bool_or(wait_event_type = 'Lock'), false)
			FROM pg_catalog.pg_stat_activity WHERE pid = $1`, pruner.PgConn().PID()).Scan(&waiting))
		if waiting {
			break
		}
		require.True(t, time.Now().Before(deadline), "the prune neither finished nor waited")
		time.Sleep(5 * time.Millisecond)
	}
	// The rest of the batch, in key order.
	for i := 1; i < n; i++ {
		register(tx, i)
	}
	require.NoError(t, tx.Commit(ctx(t)))
	if !finished {
		pruneErr = <-done
	}
	require.NoError(t, pruneErr, "the prune waited for a row the batch locked")
	require.Equal(t, int64(n-1), res.Names, "every name but the batch's locked one pruned")
	var registered int
	require.NoError(t, setup.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.locks WHERE name LIKE $1 || '%'`, prefix).Scan(&registered))
	require.Equal(t, n, registered, "the batch registered every name again")
}

// Prune deletes the group memberships of members whose row it deleted (or
// that were gone already), and keeps those of members whose row stays.
func TestPruneGroupMembers(t *testing.T) {
	t.Parallel()
	_, _, conn, mk := pruneDatabase(t)
	running, gone := mk("running"), mk("gone")
	for _, c := range []*Coordinator{running, gone} {
		require.NoError(t, c.JoinGroup(ctx(t), "workers", nil))
	}
	require.NoError(t, gone.Stop(ctx(t)))
	backdate(t, conn, `UPDATE pgcoord.members SET stopped_at = now() - interval '2 hours' WHERE member_id = $1`, gone.MemberID())
	memberships := func(member string) (n int) {
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.group_members WHERE member_id = $1`, member).Scan(&n))
		return n
	}
	require.Equal(t, 1, memberships(gone.MemberID()), "a stopped member's membership stays until its row goes")
	res, err := running.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Members)
	require.Equal(t, int64(1), res.GroupMembers)
	require.Zero(t, memberships(gone.MemberID()))
	require.Equal(t, 1, memberships(running.MemberID()))
}

// Prune deletes the recorded tokens of keys unused past the retention, and
// keeps those of held keys, of recent ones, and of rows a transaction has
// locked (fence_ok), which it skips rather than waits for.
func TestPruneFences(t *testing.T) {
	t.Parallel()
	dbURL, _, conn, mk := pruneDatabase(t)
	c := mk("fencer", func(cfg *Config) { cfg.Fencing = true })
	take := func(name string, keep bool) *Lock {
		l := c.GetLock(name)
		mustAcquire(t, l, NoWait)
		if !keep {
			require.NoError(t, l.Release(ctx(t)))
		}
		return l
	}
	held, old, recent, guarded := take("held", true), take("old", false), take("recent", false), take("guarded", false)
	fence := func(l *Lock) (token int64) {
		err := conn.QueryRow(ctx(t), `SELECT token FROM pgcoord.fences WHERE key = $1`, l.Key()).Scan(&token)
		if err == pgx.ErrNoRows {
			return 0
		}
		require.NoError(t, err)
		return token
	}
	guardedToken := fence(guarded)
	require.Positive(t, guardedToken)
	backdate(t, conn, `UPDATE pgcoord.fences SET updated_at = now() - interval '2 hours' WHERE key <> $1`, recent.Key())

	// An application's transaction checks guarded's token (fence_ok locks
	// the row until it ends).
	tx, err := connect(t, dbURL).Begin(ctx(t))
	require.NoError(t, err)
	var ok bool
	require.NoError(t, tx.QueryRow(ctx(t), `SELECT pgcoord.fence_ok($1, $2)`, guarded.Key(), guardedToken).Scan(&ok))
	require.True(t, ok)

	res, err := c.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Fences, "only old's row: held is held, recent recent, guarded locked")
	require.Zero(t, fence(old))
	require.Positive(t, fence(held))
	require.Positive(t, fence(recent))
	require.Equal(t, guardedToken, fence(guarded))

	require.NoError(t, tx.Commit(ctx(t)))
	res, err = c.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Fences, "guarded's row, once its transaction ended")
	require.Zero(t, fence(guarded))

	// The next holder of a pruned key records a newer token, and fence_ok
	// takes it.
	again := take("old", true)
	require.Equal(t, again.Token(), fence(old))
	require.Greater(t, again.Token(), held.Token())
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT pgcoord.fence_ok($1, $2)`, old.Key(), again.Token()).Scan(&ok))
	require.True(t, ok)
}

// Prune deletes the limits of semaphores unused past the retention, and
// keeps those whose slot is held (another limit's holder is still refused)
// and recent ones.
func TestPruneSemaphoreLimits(t *testing.T) {
	t.Parallel()
	_, prefix, conn, mk := pruneDatabase(t)
	c, other := mk("holder"), mk("other")
	held := c.Semaphore("held", 2)
	mustTake(t, held, NoWait)
	for _, s := range []*Semaphore{c.Semaphore("old", 3), c.Semaphore("recent", 1)} {
		mustTake(t, s, NoWait)
		require.NoError(t, s.Release(ctx(t)))
	}
	limits := func(name string) (n int) {
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.semaphores WHERE semaphore = $1`, prefix+name).Scan(&n))
		return n
	}
	backdate(t, conn, `UPDATE pgcoord.semaphores SET last_used = now() - interval '2 hours' WHERE semaphore <> $1`, prefix+"recent")

	res, err := c.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.SemaphoreLimits, "only old's limit")
	require.Zero(t, limits("old"))
	require.Equal(t, 1, limits("held"))
	require.Equal(t, 1, limits("recent"))

	// The held limit still counts against a holder of another.
	_, err = other.Semaphore("held", 5).Acquire(ctx(t), NoWait)
	require.ErrorIs(t, err, ErrLimitMismatch)
	// A pruned semaphore used again records its limit again.
	mustTake(t, other.Semaphore("old", 3), NoWait)
	require.Equal(t, 1, limits("old"))
}

// Prune deletes the last term of an election begun before the retention
// whose leader has not been heard from for as long and whose lock is free;
// it keeps a held election's, a recent term's, and one whose leader still
// runs. A pruned election is campaigned for again with a newer token.
func TestPruneElections(t *testing.T) {
	t.Parallel()
	_, prefix, conn, mk := pruneDatabase(t)
	a, b, c := mk("a"), mk("b"), mk("c")
	lead := func(co *Coordinator, name string, resign bool) *Election {
		e := co.Election(name)
		require.NoError(t, e.Campaign(ctx(t), co.MemberID()))
		if resign {
			require.NoError(t, e.Resign(ctx(t)))
		}
		return e
	}
	lead(a, "led", false)
	lead(a, "quiet", true)
	lead(b, "old", true)
	lead(c, "recent", true)
	require.NoError(t, b.Stop(ctx(t)))
	require.NoError(t, c.Stop(ctx(t)))
	backdate(t, conn, `UPDATE pgcoord.members SET stopped_at = now() - interval '2 hours' WHERE member_id IN ($1, $2)`, b.MemberID(), c.MemberID())
	backdate(t, conn, `UPDATE pgcoord.elections SET since = now() - interval '2 hours' WHERE election <> $1`, prefix+"recent")
	terms := func(name string) (n int) {
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.elections WHERE election = $1`, prefix+name).Scan(&n))
		return n
	}
	var oldToken int64
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT token FROM pgcoord.elections WHERE election = $1`, prefix+"old").Scan(&oldToken))

	res, err := a.Prune(ctx(t), time.Hour)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Elections, "only old's: led is held, quiet's leader runs, recent is recent")
	require.Zero(t, terms("old"))
	require.Equal(t, 1, terms("led"))
	require.Equal(t, 1, terms("quiet"))
	require.Equal(t, 1, terms("recent"))

	e := lead(a, "old", false)
	l, err := e.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, a.MemberID(), l.MemberID)
	require.Greater(t, l.Token, oldToken)
}

// pruneDatabase is a fresh, migrated database for a prune test (a prune
// deletes across every prefix: other tests' rows stay out of it), the
// test's prefix, a connection to it, and mk, which starts a coordinator on it named agent,
// with Retention -1 (no background prune) and mods.
func pruneDatabase(t *testing.T) (dbURL, prefix string, conn *pgx.Conn, mk func(agent string, mods ...func(*Config)) *Coordinator) {
	t.Helper()
	dbURL = freshDatabase(t)
	require.NoError(t, Migrate(ctx(t), dbURL))
	prefix = testPrefix(t)
	mk = func(agent string, mods ...func(*Config)) *Coordinator {
		return newCoord(t, prefix, append([]func(*Config){func(cfg *Config) {
			cfg.ConnString, cfg.AgentID, cfg.Retention = dbURL, agent, -1
		}}, mods...)...)
	}
	return dbURL, prefix, connect(t, dbURL), mk
}
