package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/db"
)

// peakBackends samples c's backends every few milliseconds until stop is
// called, which returns the highest count seen.
func peakBackends(t *testing.T, c *Coordinator) (stop func() int) {
	t.Helper()
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var n int64
			if err := testPool.QueryRow(context.Background(),
				`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, c.sessionTag).Scan(&n); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() int {
		close(done)
		wg.Wait()
		return int(peak.Load())
	}
}

func TestBudgetIdleAndUncontended(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	require.Equal(t, DefaultMaxSessions, c.cfg.MaxSessions)
	require.LessOrEqual(t, backendsOf(t, c), 2, "idle")
	peak := peakBackends(t, c)
	locks := make([]*Lock, 100)
	for i := range locks {
		locks[i] = c.GetLock(fmt.Sprintf("n%d", i))
		mustAcquire(t, locks[i], Wait)
	}
	require.LessOrEqual(t, backendsOf(t, c), 2, "holding 100 uncontended locks")
	for _, l := range locks {
		require.NoError(t, l.Release(ctx(t)))
	}
	require.LessOrEqual(t, peak(), 2, "peak while taking 100 uncontended locks (names registered on the control session)")
}

// 40 goroutines wait on 40 names held elsewhere: two wait on wait sessions,
// the rest beyond the budget; the coordinator never uses more than 4
// backends, and every waiter gets its lock once the holder lets go.
func TestBudgetManyWaiters(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	c := newCoord(t, p)
	const n = 40
	held := make([]*Lock, n)
	for i := range held {
		held[i] = holder.GetLock(fmt.Sprintf("w%d", i))
		mustAcquire(t, held[i], NoWait)
	}
	peak := peakBackends(t, c)
	errs := make(chan error, n)
	waiting := make([]*Lock, n)
	for i := range waiting {
		waiting[i] = c.GetLock(fmt.Sprintf("w%d", i))
		go func() {
			ok, err := waiting[i].Acquire(ctx(t), Wait)
			if err == nil && !ok {
				err = errors.New("Wait returned false")
			}
			errs <- err
		}()
	}
	require.Eventually(t, func() bool {
		return c.Stats().WaitsBeyondBudget >= n-2 && markersHeld(t, c) == n-2
	}, 20*time.Second, 10*time.Millisecond, "38 waits beyond the budget, each with its marker")
	require.LessOrEqual(t, backendsOf(t, c), 4)
	for _, l := range held {
		require.NoError(t, l.Release(ctx(t)))
	}
	for range n {
		require.NoError(t, <-errs)
	}
	require.LessOrEqual(t, peak(), 4, "peak backends with 40 waiters")
	for _, l := range waiting {
		require.NotZero(t, l.Token())
		require.NoError(t, l.Release(ctx(t)))
	}
	require.Eventually(t, func() bool { return markersHeld(t, c) == 0 }, 10*time.Second, 10*time.Millisecond, "markers dropped")
}

// markersHeld counts the wait markers held by c's sessions.
func markersHeld(t *testing.T, c *Coordinator) int {
	t.Helper()
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objsubid = 2
		  AND l.mode = 'ShareLock' AND l.granted`, c.sessionTag).Scan(&n))
	return n
}

// markerHeld reports whether c holds the wait marker of key.
func markerHeld(t *testing.T, c *Coordinator, key int64) bool {
	t.Helper()
	var held bool
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objsubid = 2
		  AND l.mode = 'ShareLock' AND l.granted
		  AND l.classid::bigint = (($2::bigint >> 32) & 4294967295)
		  AND l.objid::bigint = ($2::bigint & 4294967295))`, c.sessionTag, key).Scan(&held))
	return held
}

// A holder whose backend is terminated sends no NOTIFY: the dead-holder
// check wakes the wait beyond the budget.
func TestFarWaitWokenWhenHolderKilled(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	hl := holder.GetLock("k")
	mustAcquire(t, hl, NoWait)
	w := c.GetLock("k")
	res := make(chan error, 1)
	go func() {
		ok, err := w.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = errors.New("Wait returned false")
		}
		res <- err
	}()
	require.Eventually(t, func() bool { return markerHeld(t, c, w.Key()) }, 10*time.Second, 5*time.Millisecond)
	pid := heldBy(t, hl.Key())
	require.NotZero(t, pid)
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	require.NoError(t, <-res)
	require.NotZero(t, w.Token())
	require.Equal(t, 2, backendsOf(t, c))
	require.NoError(t, w.Release(ctx(t)))
}

// Cancelling one wait beyond the budget leaves the others waiting, with
// their markers in place, and they still get their locks.
func TestFarWaitCancelCostsOthersNothing(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	names := []string{"a", "b", "c"}
	held := make([]*Lock, len(names))
	waiting := make([]*Lock, len(names))
	for i, name := range names {
		held[i] = holder.GetLock(name)
		mustAcquire(t, held[i], NoWait)
		waiting[i] = c.GetLock(name)
	}
	cctx, cancel := context.WithCancel(ctx(t))
	res := make([]chan error, len(names))
	for i, l := range waiting {
		res[i] = make(chan error, 1)
		wctx := ctx(t)
		if i == 0 {
			wctx = cctx
		}
		go func() {
			ok, err := l.Acquire(wctx, Wait)
			if err == nil && !ok {
				err = errors.New("Wait returned false")
			}
			res[i] <- err
		}()
	}
	require.Eventually(t, func() bool { return markersHeld(t, c) == len(names) }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-res[0], context.Canceled)
	require.Eventually(t, func() bool { return !markerHeld(t, c, waiting[0].Key()) }, 10*time.Second, 5*time.Millisecond)
	for _, l := range waiting[1:] {
		require.True(t, markerHeld(t, c, l.Key()), "%s's marker", l.Name())
	}
	for i := 1; i < len(names); i++ {
		select {
		case err := <-res[i]:
			t.Fatalf("%s ended: %v", names[i], err)
		default:
		}
	}
	for _, l := range held {
		require.NoError(t, l.Release(ctx(t)))
	}
	for i := 1; i < len(names); i++ {
		require.NoError(t, <-res[i])
		require.NoError(t, waiting[i].Release(ctx(t)))
	}
	require.Equal(t, 2, backendsOf(t, c))
}

// Waits beyond the budget also end at their Timeout.
func TestFarWaitTimeout(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	mustAcquire(t, holder.GetLock("t"), NoWait)
	ok, err := c.GetLock("t").Acquire(ctx(t), Timeout(200*time.Millisecond))
	require.NoError(t, err)
	require.False(t, ok)
	require.Eventually(t, func() bool { return markersHeld(t, c) == 0 }, 10*time.Second, 5*time.Millisecond)
}

// Sixteen goroutines on four coordinators contending for one name: each gets
// it, and nobody waits far longer than the rest (the bound is generous: the
// figure that matters is the benchmark's).
func TestNoStarvation(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	var coords []*Coordinator
	for range 4 {
		coords = append(coords, newCoord(t, p))
	}
	deadline := time.Now().Add(3 * time.Second)
	var mu sync.Mutex
	var waits []time.Duration
	counts := make([]int, 16)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := coords[g%4].GetLock("one")
			for time.Now().Before(deadline) {
				start := time.Now()
				ok, err := l.Acquire(ctx(t), Wait)
				if err != nil || !ok {
					t.Errorf("acquire: %v %v", ok, err)
					return
				}
				w := time.Since(start)
				time.Sleep(time.Millisecond)
				if err := l.Release(ctx(t)); err != nil {
					t.Errorf("release: %v", err)
					return
				}
				mu.Lock()
				waits = append(waits, w)
				counts[g]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var total, longest time.Duration
	for _, w := range waits {
		total += w
		longest = max(longest, w)
	}
	mean := total / time.Duration(len(waits))
	for g, n := range counts {
		require.NotZero(t, n, "goroutine %d never got the lock", g)
	}
	require.LessOrEqual(t, longest, 100*mean, "longest wait %v, mean %v", longest, mean)
}

// backendsOn counts c's sessions on the server at url.
func backendsOn(t *testing.T, conn *pgx.Conn, c *Coordinator) int {
	t.Helper()
	var n int
	require.NoError(t, conn.QueryRow(ctx(t),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, c.sessionTag).Scan(&n))
	return n
}

// waitAcquire starts l waiting and returns the channel of its outcome.
func waitAcquire(t *testing.T, l *Lock) chan error {
	res := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = errors.New("Wait returned false")
		}
		res <- err
	}()
	return res
}

// A coordinator opens no session that would leave the server fewer free
// connection slots than its headroom: the wait goes beyond the budget and
// still gets its lock.
func TestHeadroomRefusesSession(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, map[string]string{"max_connections": "20"})
	p := testPrefix(t)
	on := func(cfg *Config) { cfg.ConnString = srv.URL() }
	holder := newCoord(t, p, on)
	c := newCoord(t, p, on, func(cfg *Config) { cfg.ConnectionHeadroom = 5 })
	admin := connect(t, srv.URL())
	// Take slots until exactly 5 are free: a sixth session would leave 4.
	// (Once the migration's backends have exited: only the two
	// coordinators and admin are left.)
	var usable, used int
	require.Eventually(t, func() bool {
		require.NoError(t, admin.QueryRow(ctx(t), db.FreeConnections).Scan(&usable, &used))
		return used == 5
	}, 10*time.Second, 10*time.Millisecond)
	for range usable - used - 5 {
		_ = connect(t, srv.URL())
	}
	hl := holder.GetLock("h")
	mustAcquire(t, hl, NoWait)
	w := c.GetLock("h")
	res := waitAcquire(t, w)
	require.Eventually(t, func() bool { return c.Stats().RefusedSessions >= 1 && c.Stats().WaitsBeyondBudget >= 1 },
		10*time.Second, 5*time.Millisecond)
	require.Equal(t, 2, backendsOn(t, admin, c))
	require.NoError(t, hl.Release(ctx(t)))
	require.NoError(t, <-res)
	require.Equal(t, 2, backendsOn(t, admin, c))
	require.NoError(t, w.Release(ctx(t)))

	// Start, too, refuses to eat into the headroom, and leaves nothing open.
	refused, err := New(Config{ConnString: srv.URL(), Prefix: p, SkipMigrations: true, ConnectionHeadroom: 100, Logger: quietLogger()})
	require.NoError(t, err)
	require.ErrorIs(t, refused.Start(ctx(t)), ErrTooManyConnections)
	require.Eventually(t, func() bool { return backendsOn(t, admin, refused) == 0 }, 10*time.Second, 5*time.Millisecond)

	// The default headroom, 10% of 17 usable slots, leaves room here.
	d := newCoord(t, p, on)
	mustAcquire(t, hl, NoWait)
	res = waitAcquire(t, d.GetLock("h"))
	require.Eventually(t, func() bool { return backendsOn(t, admin, d) == 3 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, hl.Release(ctx(t)))
	require.NoError(t, <-res)
	require.Zero(t, d.Stats().RefusedSessions)
}

// connectWhenFree is connect, retried while the server refuses for want of
// slots that backends still exiting hold.
func connectWhenFree(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	var conn *pgx.Conn
	require.Eventually(t, func() bool {
		c, err := pgx.Connect(ctx(t), url)
		if err != nil {
			require.ErrorIs(t, tooManyConnections(err), ErrTooManyConnections)
			return false
		}
		conn = c
		return true
	}, 10*time.Second, 10*time.Millisecond)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// A server out of connection slots refuses a session with SQLSTATE 53300:
// that is ErrTooManyConnections, the coordinator carries on with the
// sessions it has, and a new coordinator's Start fails with it.
func TestTooManyConnections(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, map[string]string{"max_connections": "6", "superuser_reserved_connections": "0"})
	p := testPrefix(t)
	on := func(cfg *Config) { cfg.ConnString = srv.URL(); cfg.ConnectionHeadroom = -1 }
	// The migration's connections may still be exiting: wait for their
	// slots before taking all six.
	admin := connectWhenFree(t, srv.URL())
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&n))
		return n == 1
	}, 10*time.Second, 10*time.Millisecond, "only this connection left")
	holder := newCoord(t, p, on)
	c := newCoord(t, p, on)
	_ = connectWhenFree(t, srv.URL()) // the sixth and last slot
	hl := holder.GetLock("full")
	mustAcquire(t, hl, NoWait)
	w := c.GetLock("full")
	res := waitAcquire(t, w)
	require.Eventually(t, func() bool { return c.Stats().RefusedSessions >= 1 && c.Stats().WaitsBeyondBudget >= 1 },
		10*time.Second, 5*time.Millisecond)
	require.NoError(t, hl.Release(ctx(t)))
	require.NoError(t, <-res)
	require.Equal(t, 2, backendsOn(t, admin, c))
	require.NoError(t, w.Release(ctx(t)))

	late, err := New(Config{ConnString: srv.URL(), SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	err = late.Start(ctx(t))
	require.ErrorIs(t, err, ErrTooManyConnections)
	require.Contains(t, err.Error(), "pgcoord: ")
}

// Heartbeats update pgcoord.members in place: the migration leaves room on
// every page (fillfactor), and no index covers last_heartbeat (an index on
// it would make every heartbeat a non-HOT update).
func TestMembersTableTakesHOTHeartbeats(t *testing.T) {
	t.Parallel()
	var opts []string
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'pgcoord.members'::regclass`).Scan(&opts))
	require.Contains(t, opts, "fillfactor=70")
	var indexed bool
	require.NoError(t, testPool.QueryRow(ctx(t), `
		SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
		               ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		               WHERE i.indrelid = 'pgcoord.members'::regclass AND a.attname = 'last_heartbeat')`).Scan(&indexed))
	require.False(t, indexed, "an index on last_heartbeat makes heartbeats non-HOT")
}

// The control session serves the waits beyond the budget; when it is cut
// off, the waits go on (they try every check period until the reconnect,
// which marks them again) and still get their lock.
func TestFarWaitSurvivesControlReconnect(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	c := newCoord(t, p, func(cfg *Config) {
		cfg.MaxSessions = 2
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.SessionTimeout = 2 * time.Second
		cfg.InitialReconnectBackoff = 10 * time.Millisecond
		cfg.MaxReconnectBackoff = 100 * time.Millisecond
	})
	hl := holder.GetLock("r")
	mustAcquire(t, hl, NoWait)
	w := c.GetLock("r")
	res := waitAcquire(t, w)
	require.Eventually(t, func() bool { return markerHeld(t, c, w.Key()) }, 10*time.Second, 5*time.Millisecond)
	reconnects := c.Stats().Reconnects
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, c.control.backendPID)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Stats().Reconnects > reconnects && markerHeld(t, c, w.Key()) },
		20*time.Second, 10*time.Millisecond, "reconnected and marked again")
	require.NoError(t, hl.Release(ctx(t)))
	require.NoError(t, <-res)
	require.NoError(t, w.Release(ctx(t)))
}

// Stop ends a wait beyond the budget at once, with ErrNotStarted.
func TestStopEndsFarWait(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	c := newCoord(t, p, func(cfg *Config) { cfg.MaxSessions = 2 })
	mustAcquire(t, holder.GetLock("s"), NoWait)
	w := c.GetLock("s")
	res := waitAcquire(t, w)
	require.Eventually(t, func() bool { return markerHeld(t, c, w.Key()) }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, c.Stop(ctx(t)))
	require.ErrorIs(t, <-res, ErrNotStarted)
	require.Eventually(t, func() bool { return backendsOf(t, c) == 0 }, 10*time.Second, 5*time.Millisecond, "backends exit")
}

// Names register on the control session: a name first used while that
// session is being reconnected waits for the reconnect instead of failing.
func TestNewNameDuringControlReconnect(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.SessionTimeout = 2 * time.Second
		cfg.InitialReconnectBackoff = 50 * time.Millisecond
		cfg.MaxReconnectBackoff = 100 * time.Millisecond
	})
	pid := c.control.backendPID
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var gone bool
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&gone))
		return gone
	}, 10*time.Second, 5*time.Millisecond)
	reconnects := c.Stats().Reconnects
	mustAcquire(t, c.GetLock("first-use-during-reconnect"), NoWait)
	require.Greater(t, c.Stats().Reconnects, reconnects, "the acquire waited for the reconnect")
}
