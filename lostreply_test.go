package pgcoord

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// stallConn is a client socket whose reads, once stalled, return nothing
// until it is closed: a reply the server sent is then never read, as when
// a connection breaks between the server's commit and the client's read.
type stallConn struct {
	net.Conn
	stalled   atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
}

func (s *stallConn) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	if s.stalled.Load() {
		<-s.closed
		return 0, net.ErrClosed
	}
	return n, err
}

func (s *stallConn) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return s.Conn.Close()
}

// stallingPool is a pool config for url whose connections are stallConns.
func stallingPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stallConn{Conn: conn, closed: make(chan struct{})}, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// loseReply has the write that slowWrite's trigger holds up commit, and
// its reply lost: c's control socket stops reading while the write runs,
// and is closed once committed shows the write done.
func loseReply(t *testing.T, admin *pgx.Conn, c *Coordinator, committed func() bool) {
	t.Helper()
	awaitSleep(t, admin, "the write never started")
	c.control.raw.Load().Conn.(*stallConn).stalled.Store(true)
	require.Eventually(t, committed, 10*time.Second, time.Millisecond, "the write never committed")
	c.control.forceClose(0)
}

// slowWrite makes the writes of table that match when take 300 ms, with a
// trigger.
func slowWrite(t *testing.T, admin *pgx.Conn, table, events, when string) {
	t.Helper()
	_, err := admin.Exec(ctx(t), `
		CREATE OR REPLACE FUNCTION public.slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(0.3); IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$;
		CREATE TRIGGER slow_write BEFORE `+events+` ON `+table+` FOR EACH ROW
		WHEN (`+when+`) EXECUTE FUNCTION public.slow_write()`)
	require.NoError(t, err)
}

// A control-session write whose first run committed and whose reply was
// lost with the connection runs again after the reconnect (detached), and
// takes "already done" for done. Before, a Campaign whose term was recorded
// that way failed with "a newer term is recorded" (its own), leaving the
// term unresigned, and a LeaveGroup returned ErrNotJoined though it had
// left.
func TestWriteRepeatedAfterLostReply(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	admin := connect(t, srv.URL())
	pool := stallingPool(t, srv.URL())
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString, cfg.Pool = "", pool })

	t.Run("Campaign", func(t *testing.T) {
		slowWrite(t, admin, "pgcoord.elections", "INSERT OR UPDATE", "NEW.value = 'cut'")
		e := c.Election("e")
		done := make(chan error, 1)
		go func() { done <- e.Campaign(ctx(t), "cut") }()
		loseReply(t, admin, c, func() bool {
			var n int
			require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.elections WHERE election = $1 AND value = 'cut'`, e.full).Scan(&n))
			return n == 1
		})
		require.NoError(t, <-done, "a Campaign whose term was recorded failed for the lost reply")
		require.True(t, e.IsLeader())
		var member string
		var token int64
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT member_id, token FROM pgcoord.elections WHERE election = $1`, e.full).Scan(&member, &token))
		require.Equal(t, c.MemberID(), member)
		require.Equal(t, e.Token(), token)
		require.NoError(t, e.Resign(ctx(t)))
	})

	t.Run("LeaveGroup", func(t *testing.T) {
		require.NoError(t, c.JoinGroup(ctx(t), "g", nil))
		slowWrite(t, admin, "pgcoord.group_members", "DELETE", "true")
		done := make(chan error, 1)
		go func() { done <- c.LeaveGroup(ctx(t), "g") }()
		loseReply(t, admin, c, func() bool {
			var n int
			require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.group_members WHERE member_id = $1`, c.MemberID()).Scan(&n))
			return n == 0
		})
		require.NoError(t, <-done, "a LeaveGroup that left reported ErrNotJoined for the lost reply")
	})
}

// awaitSleep waits until a backend of admin's server sleeps in pg_sleep
// (a trigger of the test's holding a write up).
func awaitSleep(t *testing.T, admin *pgx.Conn, what string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var sleeping bool
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event = 'PgSleep')`).Scan(&sleeping))
		return sleeping
	}, 10*time.Second, time.Millisecond, what)
}
