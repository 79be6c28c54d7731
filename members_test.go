package pgcoord

import (
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/db"
)

func member(t testing.TB, id string) db.PgcoordMember {
	t.Helper()
	m, err := db.New().GetMember(ctx(t), testPool, id)
	require.NoError(t, err)
	return m
}

func isLive(t testing.TB, id string) bool {
	var live bool
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT EXISTS (SELECT 1 FROM pgcoord.live_members WHERE member_id = $1)`, id).Scan(&live))
	return live
}

func TestMemberRowAndHeartbeat(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.AgentID = "agent-1" })
	require.Equal(t, p+"agent-1", c.MemberID())
	m := member(t, c.MemberID())
	require.Equal(t, p, m.Prefix)
	require.Equal(t, "agent-1", m.AgentID)
	require.Equal(t, int32(os.Getpid()), m.Pid)
	host, _ := os.Hostname()
	require.Equal(t, host, m.Hostname)
	require.False(t, m.StoppedAt.Valid)
	require.True(t, isLive(t, c.MemberID()))
	first := m.LastHeartbeat.Time

	// last_heartbeat moves with the database clock.
	require.Eventually(t, func() bool {
		return member(t, c.MemberID()).LastHeartbeat.Time.After(first)
	}, 5*time.Second, 50*time.Millisecond)
	var dbNow pgtype.Timestamptz
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT now()`).Scan(&dbNow))
	require.WithinDuration(t, dbNow.Time, member(t, c.MemberID()).LastHeartbeat.Time, 2*time.Second)

	require.NoError(t, c.Heartbeat(ctx(t)))
	require.True(t, c.IsActive())

	require.NoError(t, c.Stop(ctx(t)))
	m = member(t, c.MemberID())
	require.True(t, m.StoppedAt.Valid)
	require.False(t, isLive(t, c.MemberID()))
	require.False(t, c.IsActive())
	require.ErrorIs(t, c.Heartbeat(ctx(t)), ErrNotStarted)
}

func TestSecondLiveMemberRefused(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	first := newCoord(t, p, func(cfg *Config) { cfg.AgentID = "same" })
	second, err := New(Config{ConnString: testURL, Prefix: p, AgentID: "same", SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	require.ErrorIs(t, second.Start(ctx(t)), ErrMemberExists)
	// The failed start left the live member alone.
	require.True(t, isLive(t, first.MemberID()))
	require.False(t, member(t, first.MemberID()).StoppedAt.Valid)
	require.NoError(t, first.Stop(ctx(t)))

	// Once the first is stopped the id can start again.
	third := newCoord(t, p, func(cfg *Config) { cfg.AgentID = "same" })
	require.True(t, isLive(t, third.MemberID()))
}

// A second Start is a no-op: no new sessions, the same member row.
func TestStartIsIdempotentAndAgentIDDefaults(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	sessions, row := backendsOf(t, c), member(t, c.MemberID())
	require.NoError(t, c.Start(ctx(t)))
	require.Equal(t, sessions, backendsOf(t, c), "no sessions opened by a second Start")
	again := member(t, c.MemberID())
	require.Equal(t, row.StartedAt, again.StartedAt, "member row not rewritten")
	require.Equal(t, row.BackendPid, again.BackendPid)
	require.Len(t, c.MemberID(), len(c.cfg.Prefix)+36, "a UUID agent id")
}

// held_locks shows holders and waiters with the documented columns.
func TestHeldLocksView(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c1, c2 := newCoord(t, p), newCoord(t, p)
	l := c1.GetLock("viewed")
	mustAcquire(t, l, NoWait)
	w := c2.GetLock("viewed")
	done := make(chan struct{})
	go func() {
		defer close(done)
		ok, err := w.Acquire(ctx(t), Wait)
		if ok && err == nil {
			_ = w.Release(ctx(t))
		}
	}()
	require.Eventually(t, func() bool { return waiters(t, l.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)
	rows, err := testPool.Query(ctx(t),
		`SELECT name, key, mode, member_id, granted, since FROM pgcoord.held_locks WHERE key = $1 ORDER BY granted DESC`, l.Key())
	require.NoError(t, err)
	type row struct {
		name, mode, member string
		key                int64
		granted            bool
		since              pgtype.Timestamptz
	}
	var got []row
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.name, &r.key, &r.mode, &r.member, &r.granted, &r.since))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Len(t, got, 2)
	require.Equal(t, row{name: p + "viewed", key: l.Key(), mode: "exclusive", member: c1.MemberID(), granted: true, since: got[0].since}, got[0])
	require.Equal(t, c2.MemberID(), got[1].member)
	require.False(t, got[1].granted)
	require.True(t, got[0].since.Valid && got[1].since.Valid)
	require.NoError(t, l.Release(ctx(t)))
	<-done
}
