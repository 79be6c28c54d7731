package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc  string
		cfg   Config
		field string
	}{
		{"no connection", Config{}, "ConnString"},
		{"negative heartbeat", Config{ConnString: testURL, HeartbeatInterval: -time.Second}, "HeartbeatInterval"},
		{"tiny heartbeat", Config{ConnString: testURL, HeartbeatInterval: time.Microsecond}, "HeartbeatInterval"},
		{"negative initial backoff", Config{ConnString: testURL, InitialReconnectBackoff: -1}, "InitialReconnectBackoff"},
		{"negative max backoff", Config{ConnString: testURL, MaxReconnectBackoff: -1}, "MaxReconnectBackoff"},
		{"initial above max", Config{ConnString: testURL, InitialReconnectBackoff: time.Minute, MaxReconnectBackoff: time.Second}, "InitialReconnectBackoff"},
		{"negative lock cap", Config{ConnString: testURL, MaxHeldLocks: -1}, "MaxHeldLocks"},
		{"budget of one session", Config{ConnString: testURL, MaxSessions: 1}, "MaxSessions"},
		{"negative budget", Config{ConnString: testURL, MaxSessions: -4}, "MaxSessions"},
		{"budget too large", Config{ConnString: testURL, MaxSessions: 1025}, "MaxSessions"},
		{"session timeout under 4 heartbeats", Config{ConnString: testURL, SessionTimeout: 3 * time.Second}, "SessionTimeout"},
		{"lease under MinLease", Config{ConnString: testURL, HeartbeatInterval: 20 * time.Millisecond, SessionTimeout: 120 * time.Millisecond}, "SessionTimeout"},
		{"bad connection string", Config{ConnString: "postgres://u:pw@%zz/db"}, "ConnString"},
		{"unknown key=value setting", Config{ConnString: "host=localhost sslmode=sometimes"}, "ConnString"},
		{"member id not UTF-8", Config{ConnString: testURL, AgentID: "\xff"}, "AgentID"},
		// The server takes SessionTimeout as milliseconds in an int32.
		{"session timeout above the server's bound", Config{ConnString: testURL, SessionTimeout: 30 * 24 * time.Hour}, "SessionTimeout"},
		{"session timeout just above the bound", Config{ConnString: testURL, SessionTimeout: MaxSessionTimeout + time.Millisecond}, "SessionTimeout"},
		{"heartbeat too long for any session timeout", Config{ConnString: testURL, HeartbeatInterval: 7 * 24 * time.Hour}, "HeartbeatInterval"},
		// 5 × HeartbeatInterval overflows: the default SessionTimeout came
		// out at 2^62+1s, a lease of one second for a heartbeat of 73 years.
		{"heartbeat whose default timeout overflows", Config{ConnString: testURL, HeartbeatInterval: 1 << 61}, "HeartbeatInterval"},
	} {
		c, err := New(tc.cfg)
		require.Nil(t, c, tc.desc)
		require.ErrorIs(t, err, ErrInvalidConfig, tc.desc)
		require.Contains(t, err.Error(), tc.field, tc.desc)
	}
	pool, err := pgxpool.New(context.Background(), testURL)
	require.NoError(t, err)
	defer pool.Close()
	_, err = New(Config{ConnString: testURL, Pool: pool})
	require.ErrorIs(t, err, ErrInvalidConfig, "both ConnString and Pool")
}

func TestNewFillsDefaults(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL})
	require.NoError(t, err)
	require.Equal(t, DefaultHeartbeatInterval, c.cfg.HeartbeatInterval)
	require.Equal(t, DefaultInitialReconnectBackoff, c.cfg.InitialReconnectBackoff)
	require.Equal(t, DefaultMaxReconnectBackoff, c.cfg.MaxReconnectBackoff)
	require.Equal(t, DefaultMaxSessions, c.cfg.MaxSessions)
	require.Equal(t, DefaultMaxSessions-2, c.cfg.waitSessions())
	require.NotEmpty(t, c.cfg.AgentID)
	require.False(t, c.IsActive())
}

// Setting one reconnect bound moves the other's default out of its way
// rather than failing; only two explicit bounds can contradict each other.
func TestNewBackoffDefaultsFollowTheSetBound(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL, MaxReconnectBackoff: 50 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, 50*time.Millisecond, c.cfg.InitialReconnectBackoff)
	require.Equal(t, 50*time.Millisecond, c.cfg.MaxReconnectBackoff)

	c, err = New(Config{ConnString: testURL, InitialReconnectBackoff: 2 * time.Minute})
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, c.cfg.InitialReconnectBackoff)
	require.Equal(t, 2*time.Minute, c.cfg.MaxReconnectBackoff)

	c, err = New(Config{ConnString: testURL, InitialReconnectBackoff: time.Second})
	require.NoError(t, err)
	require.Equal(t, time.Second, c.cfg.InitialReconnectBackoff)
	require.Equal(t, DefaultMaxReconnectBackoff, c.cfg.MaxReconnectBackoff)

	c, err = New(Config{ConnString: testURL, MaxReconnectBackoff: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, DefaultInitialReconnectBackoff, c.cfg.InitialReconnectBackoff)
	require.Equal(t, 5*time.Second, c.cfg.MaxReconnectBackoff)
}

// A coordinator can take its settings from an app's pool, and holds its
// locks on its own sessions, never on the pool's connections.
func TestStartFromPool(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(ctx(t), testURL)
	require.NoError(t, err)
	defer pool.Close()
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = ""; cfg.Pool = pool })
	l := c.GetLock("pooled")
	mustAcquire(t, l, NoWait)
	holder := heldBy(t, l.Key())
	conn, err := pool.Acquire(ctx(t))
	require.NoError(t, err)
	require.NotEqual(t, holder, int32(conn.Conn().PgConn().PID()))
	conn.Release()
	require.NoError(t, l.Release(ctx(t)))
}

func TestStartUnreachable(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: "postgres://nobody:hunter2-secret@127.0.0.1:1/db?connect_timeout=2", Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2-secret")
	require.False(t, c.IsActive())
	ok, err := c.GetLock("x").Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrNotStarted)
}

// withUser returns testURL with another user and password.
func withUser(t testing.TB, base, user, password string) string {
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.User = url.UserPassword(user, password)
	return u.String()
}

func TestStartWrongPasswordHidesIt(t *testing.T) {
	t.Parallel()
	role := fmt.Sprintf("pwtest_%d", prefixSeq.Add(1))
	_, err := testPool.Exec(ctx(t), fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'right-pw-123'`, role))
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = testPool.Exec(context.Background(), `DROP ROLE `+role) })
	secret := "Wr0ng-Secret-Value"
	for _, cs := range []string{
		withUser(t, testURL, role, secret),
		strings.Replace(withUser(t, testURL, role, ""), "postgres://", "postgres://", 1) + "&password=" + secret,
	} {
		c, err := New(Config{ConnString: cs, Logger: quietLogger()})
		require.NoError(t, err)
		err = c.Start(ctx(t))
		require.Error(t, err)
		require.Contains(t, err.Error(), "password authentication failed")
		require.NotContains(t, err.Error(), secret)
		require.NoError(t, c.Stop(ctx(t)))
	}
}

// SkipMigrations on a database without the schema fails with advice.
func TestSkipMigrationsWithoutSchema(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	c, err := New(Config{ConnString: dbURL, SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrSchemaMissing)
	require.Contains(t, err.Error(), "pgcoord migrate")
	// Nothing was left open (a closed session's backend exits a moment
	// after the client hangs up).
	require.Eventually(t, func() bool { return backendsOf(t, c) == 0 }, 5*time.Second, 20*time.Millisecond)
}

// freshDatabase creates an empty database for one test and drops it after.
func freshDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("pgcoord_test_%d", prefixSeq.Add(1))
	_, err := testPool.Exec(ctx(t), `CREATE DATABASE `+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = testPool.Exec(context.Background(), `DROP DATABASE `+name+` WITH (FORCE)`)
	})
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// FuzzNewConfig: New never panics, does no I/O, and either returns an error
// wrapping ErrInvalidConfig or a coordinator whose settings are sound.
func FuzzNewConfig(f *testing.F) {
	f.Add("postgres://u:p@127.0.0.1:1/db", "agent", "pfx/", int64(time.Second), int64(100*time.Millisecond), int64(time.Minute), int64(0), 36, 0)
	f.Add("host=localhost sslmode=verify-full", "", "", int64(-1), int64(0), int64(0), int64(0), 0, -1)
	f.Add("", "\xff", "", int64(0), int64(time.Hour), int64(time.Second), int64(time.Second), 1, 5)
	f.Fuzz(func(t *testing.T, conn, agent, prefix string, hb, initial, maxBackoff, sessionTimeout int64, maxSessions, maxHeld int) {
		c, err := New(Config{
			ConnString: conn, AgentID: agent, Prefix: prefix,
			HeartbeatInterval: time.Duration(hb), InitialReconnectBackoff: time.Duration(initial),
			MaxReconnectBackoff: time.Duration(maxBackoff), SessionTimeout: time.Duration(sessionTimeout),
			MaxSessions: maxSessions, MaxHeldLocks: maxHeld,
			Logger: quietLogger(),
		})
		if err != nil {
			if c != nil || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: %v (coordinator %v)", err, c)
			}
			return
		}
		cfg := c.cfg
		switch {
		case cfg.HeartbeatInterval < 10*time.Millisecond,
			cfg.InitialReconnectBackoff <= 0 || cfg.InitialReconnectBackoff > cfg.MaxReconnectBackoff,
			cfg.SessionTimeout-2*cfg.HeartbeatInterval < max(2*cfg.HeartbeatInterval, MinLease),
			cfg.SessionTimeout > MaxSessionTimeout,
			cfg.MaxHeldLocks < 1, cfg.MaxSessions < 2, cfg.MaxSessions > 1024, cfg.waitSessions() < 0,
			validateName(c.MemberID()) != nil:
			t.Fatalf("New accepted an unsound config: %+v", cfg)
		}
	})
}

// The budget is one control session, one lock session and the rest for
// waits.
func TestSessionBudgetSplit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc            string
		cfg             Config
		budget, waiting int
	}{
		{"defaults", Config{}, 4, 2},
		{"smallest budget: no wait session", Config{MaxSessions: 2}, 2, 0},
		{"larger budget", Config{MaxSessions: 10}, 10, 8},
	} {
		tc.cfg.ConnString = testURL
		c, err := New(tc.cfg)
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.budget, c.cfg.MaxSessions, tc.desc)
		require.Equal(t, tc.waiting, c.cfg.waitSessions(), tc.desc)
		require.Equal(t, tc.waiting, cap(c.waits.slots), tc.desc)
	}
}

// The longest timeouts New accepts are ones the server takes: a coordinator
// with SessionTimeout at MaxSessionTimeout starts, and a heartbeat long
// enough that its default SessionTimeout would pass the bound gets the
// bound instead. Above it New refuses them (TestNewRejectsBadConfig); it
// used to accept them, and Start failed with the server's untyped "invalid
// value for parameter idle_session_timeout" (SQLSTATE 22023).
func TestLongestSessionTimeoutStarts(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.SessionTimeout = MaxSessionTimeout })
	l := c.GetLock("long")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	hb := MaxSessionTimeout / 4
	d, err := New(Config{ConnString: testURL, HeartbeatInterval: hb})
	require.NoError(t, err)
	require.Equal(t, MaxSessionTimeout, d.cfg.SessionTimeout)
	require.Equal(t, 2*hb, d.lease())
}
