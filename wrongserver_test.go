package pgcoord

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// haPair starts a primary and an asynchronous streaming standby for one
// test, migrated (and the migration replayed on the standby). It is removed
// after the test's coordinators stopped (cleanups run last-added first).
func haPair(t testing.TB) *pgtemp.Pair {
	t.Helper()
	p, err := pgtemp.StartPair(pgtemp.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	require.NoError(t, Migrate(ctx(t), p.Primary().URL()))
	caughtUp(t, p)
	return p
}

// caughtUp waits until the standby has replayed everything the primary has
// committed so far. The position waited for is the WAL insert position, not
// pg_current_wal_lsn (the write position): the test servers run with
// synchronous_commit=off, so a commit's record may still sit in the WAL
// buffers, past the write position, when COMMIT returns; waiting for the
// write position let a failover lose the app role created just before it
// (make test-matrix on 18.4: "password authentication failed" on the new
// primary, or "permission denied for sequence fencing_token" when only its
// grants were lost).
func caughtUp(t testing.TB, p *pgtemp.Pair) {
	t.Helper()
	primary := connect(t, p.Primary().URL())
	var lsn string
	require.NoError(t, primary.QueryRow(ctx(t), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn))
	standby := connect(t, p.Standby().URL())
	require.Eventually(t, func() bool {
		var done bool
		err := standby.QueryRow(ctx(t), `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&done)
		return err == nil && done
	}, 30*time.Second, 10*time.Millisecond, "standby never replayed up to %s", lsn)
}

// multiHost is a URL listing servers in order, with extra query parameters.
func multiHost(extra string, servers ...*pgtemp.Server) string {
	hosts := ""
	for i, s := range servers {
		if i > 0 {
			hosts += ","
		}
		hosts += fmt.Sprintf("%s:%d", s.Host(), s.Port())
	}
	return "postgres://postgres@" + hosts + "/postgres?sslmode=disable" + extra
}

// sessionsOn counts c's sessions on the server at url.
func sessionsOn(t testing.TB, url string, c *Coordinator) int {
	t.Helper()
	var n int
	require.NoError(t, connect(t, url).QueryRow(ctx(t),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, c.sessionTag).Scan(&n))
	return n
}

// haCoord starts a coordinator on connString with a short heartbeat and
// reconnect backoff, stopped when the test ends.
func haCoord(t testing.TB, connString string, mods ...func(*Config)) *Coordinator {
	t.Helper()
	return newCoord(t, testPrefix(t), append([]func(*Config){func(cfg *Config) {
		cfg.ConnString = connString
		cfg.HeartbeatInterval = 250 * time.Millisecond
		cfg.SessionTimeout = 5 * time.Second
		cfg.InitialReconnectBackoff = 20 * time.Millisecond
		cfg.MaxReconnectBackoff = 500 * time.Millisecond
	}}, mods...)...)
}

// A standby never serves a session. A multi-host connection string that
// lists the standby first, without target_session_attrs, lands every
// session on the primary (the hot standby is skipped as it reports itself
// at connection start); so do the key=value form with
// target_session_attrs=read-write and an app's pool (Config.Pool) on the
// standby-first string. The standby alone is refused with
// ErrWrongServer, and so it is by the check run as a session connects when
// the server does not report in_hot_standby (PostgreSQL before 14).
func TestStandbyNeverServes(t *testing.T) {
	t.Parallel()
	p := haPair(t)
	primary, standby := p.Primary(), p.Standby()

	// An app's pool on the standby-first string: its settings are taken,
	// and the coordinator's own sessions skip the standby all the same.
	appPool, err := pgxpool.New(ctx(t), multiHost("", standby, primary))
	require.NoError(t, err)
	defer appPool.Close()
	for _, use := range []func(*Config){
		func(cfg *Config) {},
		func(cfg *Config) {
			cfg.ConnString = fmt.Sprintf("host=%s,%s port=%d,%d user=postgres dbname=postgres sslmode=disable target_session_attrs=read-write",
				standby.Host(), primary.Host(), standby.Port(), primary.Port())
		},
		func(cfg *Config) { cfg.ConnString, cfg.Pool = "", appPool },
	} {
		c := haCoord(t, multiHost("", standby, primary), use)
		l := c.GetLock("standby-first")
		mustAcquire(t, l, NoWait)
		require.Positive(t, sessionsOn(t, primary.URL(), c), "sessions on the primary")
		// The connections the check refused on the standby are closed, but
		// their backends may still be exiting (make test saw 2 listed); a
		// session the coordinator kept there would stay listed.
		require.Eventually(t, func() bool { return sessionsOn(t, standby.URL(), c) == 0 }, 5*time.Second, time.Millisecond,
			"sessions on the standby")
		var held bool
		require.NoError(t, connect(t, primary.URL()).QueryRow(ctx(t),
			`SELECT EXISTS (SELECT 1 FROM pgcoord.held_locks WHERE key = $1 AND granted)`, l.Key()).Scan(&held))
		require.True(t, held, "the lock is held on the primary")
		require.NoError(t, l.Release(ctx(t)))
	}

	// The standby alone.
	c, err := New(Config{ConnString: standby.URL(), SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrWrongServer)
	require.ErrorContains(t, err, "standby")

	// As on a server that does not report in_hot_standby: the session's
	// own check refuses it, before any statement of the coordinator runs.
	c, err = New(Config{ConnString: standby.URL(), SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	c.connConfig.ValidateConnect = nil
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrWrongServer)
	require.ErrorContains(t, err, "in recovery")
	// Closed: its backend is gone once it has finished exiting.
	require.Eventually(t, func() bool { return sessionsOn(t, standby.URL(), c) == 0 }, 5*time.Second, time.Millisecond)
}

// A lock or wait session that reaches another server than the
// control session's (here: the connection settings point at another
// cluster once the control session is up) is refused with ErrWrongServer
// and closed; the sessions on the right server keep their holds.
func TestSessionOnOtherServerRefused(t *testing.T) {
	t.Parallel()
	other := ownServer(t, nil)
	c := newCoord(t, testPrefix(t))
	holder := newCoord(t, c.cfg.Prefix)

	// onOpen is held on a wait session of c, on the right server; the lock
	// session, closed below, must dial again for the next try.
	onOpen, onUnopened, waiter := c.GetLock("on-open"), c.GetLock("on-unopened"), c.GetLock("waiter")
	first := holder.GetLock(onOpen.Name())
	mustAcquire(t, first, NoWait)
	acquireAfterWait(t, onOpen, first)
	mustAcquire(t, waiter, NoWait) // registers the name while it is free
	require.NoError(t, waiter.Release(ctx(t)))
	mustAcquire(t, onUnopened, NoWait)
	require.NoError(t, onUnopened.Release(ctx(t)))
	busy := holder.GetLock(waiter.Name())
	mustAcquire(t, busy, NoWait)

	cc, err := pgx.ParseConfig(other.URL())
	require.NoError(t, err)
	skipStandbys(cc)
	c.connConfig = cc // what dial reads; no session of c dials meanwhile
	// With one lock session (the default) the way to make it dial is to
	// close it: it holds nothing now.
	c.lockSs[0].forceClose(0)

	ok, err := onUnopened.Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrWrongServer, "a lock session on another cluster")
	require.ErrorContains(t, err, "control session is on system")
	ok, err = waiter.Acquire(ctx(t), Timeout(5*time.Second))
	require.False(t, ok)
	require.ErrorIs(t, err, ErrWrongServer, "a wait session on another cluster")
	// Closed: their backends are gone once they have finished exiting.
	require.Eventually(t, func() bool { return sessionsOn(t, other.URL(), c) == 0 }, 5*time.Second, time.Millisecond,
		"refused sessions are closed")

	require.NoError(t, c.Heartbeat(ctx(t)))
	require.NotZero(t, onOpen.Token(), "the hold on the right server stands")
	require.NoError(t, onOpen.Release(ctx(t)))
}

// When the control session finds itself on another server (it reconnected
// after a failover), every other session is on the old one: its holds are
// reported lost with ErrWrongServer at its next check, and it redials.
func TestControlMovedLosesOtherHolds(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	l := c.GetLock("moved")
	mustAcquire(t, l, NoWait)
	id := *c.identity.Load()
	moved := serverIdentity{systemID: id.systemID, timeline: id.timeline + 1}
	c.identity.Store(&moved)

	require.NoError(t, c.Heartbeat(ctx(t)))
	requireClosedWithin(t, l.Lost(), 5*time.Second, "Lost after the control session moved")
	err := l.Release(ctx(t))
	require.ErrorIs(t, err, ErrLockLost)
	require.ErrorIs(t, err, ErrWrongServer)
	// Freed once the old backend has exited, a moment after its socket closed.
	require.Eventually(t, func() bool { return heldBy(t, l.Key()) == 0 }, 5*time.Second, time.Millisecond,
		"the old session's lock is freed")

	// Its next dial lands on a server that is not the control session's
	// (as recorded): refused.
	ok, err := l.Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrWrongServer)
	c.identity.Store(&id)
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(context.Background()))
}
