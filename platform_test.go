package pgcoord

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/fakepg"
)

// cockroachVersion is what CockroachDB's version() returns; it reports
// server_version 13.0.0 at startup, and crdb_version.
const cockroachVersion = "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 01:53:43, go1.19.10)"

// fakeCockroach starts a FAKE server (internal/fakepg), not CockroachDB: no
// CockroachDB can run in these tests. It answers the statements Start sends
// before its advisory-lock check the way CockroachDB does, and, like
// CockroachDB, grants pg_try_advisory_lock to every session (its
// advisory-lock functions are stubs that lock nothing). With announce, it
// sends CockroachDB's startup parameters (crdb_version, server_version
// 13.0.0); without, it is any server whose locks are fake that does not say
// who it is and claims to be PostgreSQL 15.
func fakeCockroach(t *testing.T, announce bool) *fakepg.Server {
	t.Helper()
	params := map[string]string{
		// CockroachDB says 13.0.0; a server that does not say who it
		// is claims a supported PostgreSQL.
		"server_version":              "15.0",
		"server_encoding":             "UTF8",
		"client_encoding":             "UTF8",
		"standard_conforming_strings": "on",
		"DateStyle":                   "ISO, MDY",
		"TimeZone":                    "UTC",
		"integer_datetimes":           "on",
	}
	if announce {
		params["server_version"] = "13.0.0"
		params["crdb_version"] = cockroachVersion
	}
	srv, err := fakepg.Start(params, func(s *fakepg.Session, sql string) (fakepg.Result, error) {
		pid := strconv.Itoa(int(s.PID))
		switch {
		case strings.Contains(sql, "pg_try_advisory_lock"):
			return fakepg.Result{
				Columns: []fakepg.Column{{Name: "pid", OID: fakepg.Int4}, {Name: "version", OID: fakepg.Text}, {Name: "locked", OID: fakepg.Bool}},
				Rows:    [][]string{{pid, cockroachVersion, "t"}},
			}, nil
		case strings.Contains(sql, "idle_session_timeout"):
			// PrepareSession: which backend and which server, and the
			// session's bounds.
			return fakepg.Result{
				Columns: []fakepg.Column{{Name: "pid", OID: fakepg.Int4}, {Name: "in_recovery", OID: fakepg.Bool},
					{Name: "system_id", OID: fakepg.Int8}, {Name: "wal_file", OID: fakepg.Text},
					{Name: "idle_session_timeout", OID: fakepg.Text}, {Name: "tcp_user_timeout", OID: fakepg.Text},
					{Name: "synchronous_commit", OID: fakepg.Text}, {Name: "reused", OID: fakepg.Bool}},
				Rows: [][]string{{pid, "f", "7300000000000000001", "000000010000000000000001", "5000", "5000", "on", "f"}},
			}, nil
		case strings.Contains(sql, "set_config('lock_timeout'"):
			// SetLockTimeout, on the control session as it connects
			// (CockroachDB has a lock_timeout setting too).
			return fakepg.Result{
				Columns: []fakepg.Column{{Name: "set_config", OID: fakepg.Text}},
				Rows:    [][]string{{"200"}},
			}, nil
		case strings.Contains(sql, "pg_is_in_recovery"):
			// SessionIdentity: which backend and which server.
			return fakepg.Result{
				Columns: []fakepg.Column{{Name: "pid", OID: fakepg.Int4}, {Name: "in_recovery", OID: fakepg.Bool},
					{Name: "system_id", OID: fakepg.Int8}, {Name: "wal_file", OID: fakepg.Text}, {Name: "reused", OID: fakepg.Bool}},
				Rows: [][]string{{pid, "f", "7300000000000000001", "000000010000000000000001", "f"}},
			}, nil
		}
		return fakepg.Result{}, &fakepg.Error{Code: "0A000", Message: "unimplemented: " + sql}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// A server whose advisory locks do not exclude is refused at Start with
// ErrAdvisoryLocksUnsupported, by the check that two sessions cannot both
// hold one key, before any migration or member row. Fails without the
// check (Start then goes on to migrate and fails with the fake's
// "unimplemented").
func TestStartRefusesFakeAdvisoryLocks(t *testing.T) {
	t.Parallel()
	srv := fakeCockroach(t, false)
	c, err := New(Config{ConnString: srv.URL(), Prefix: testPrefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrAdvisoryLocksUnsupported)
	require.NotErrorIs(t, err, ErrSessionLocksUnsupported)
	require.Contains(t, err.Error(), "CockroachDB CCL v23", "names the server")
	require.Contains(t, err.Error(), "FOR UPDATE", "says what to do instead")
	require.False(t, c.IsActive())
	probes := 0
	for _, q := range srv.Queries() {
		require.NotContains(t, q, "schema_migrations", "refused before migrating")
		if strings.Contains(q, "pg_try_advisory_lock") {
			probes++
		}
	}
	// One probe on each of the two sessions, and one more on the control
	// session, to find it still on the backend that took the key (see
	// checkLocksExclude).
	require.Equal(t, 3, probes, "the two sessions' probes, and the control session's second look")
}

// CockroachDB says who it is at startup (crdb_version): refused before any
// statement is sent, with its version in the message.
func TestStartRefusesCockroachDB(t *testing.T) {
	t.Parallel()
	srv := fakeCockroach(t, true)
	c, err := New(Config{ConnString: srv.URL(), Prefix: testPrefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrAdvisoryLocksUnsupported)
	require.Contains(t, err.Error(), "CockroachDB CCL v23")
	for _, q := range srv.Queries() {
		require.NotContains(t, q, "pg_try_advisory_lock", "no probe needed")
	}
}

// On PostgreSQL the check passes, costs one statement on each of Start's two
// sessions, and leaves the probe key on the control session only.
func TestStartProbeOnPostgres(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	holders := func(hi, lo int32) []int32 {
		var pids []int32
		rows, err := testPool.Query(ctx(t), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted
			AND classid = ($1::integer)::bit(32)::bigint::oid AND objid = ($2::integer)::bit(32)::bigint::oid`, hi, lo)
		require.NoError(t, err)
		for rows.Next() {
			var pid int32
			require.NoError(t, rows.Scan(&pid))
			pids = append(pids, pid)
		}
		require.NoError(t, rows.Err())
		return pids
	}
	probe := holders(probeKey(c.MemberID()))
	require.Len(t, probe, 1)
	require.Equal(t, holders(c.memberHi, c.memberLo), probe, "held by the control session, which holds the member lock")
}

// The control session's backend ending between Start's two probes (its
// idle_session_timeout, on a loaded machine) frees the probe key, and the
// lock session is granted it: that proves nothing about the server, and
// Start checks again instead of refusing PostgreSQL with
// ErrAdvisoryLocksUnsupported (make test-matrix saw that refusal on 14,
// in TestStopRacingHeartbeatFreesLocks). Fails without the control
// session's second look.
func TestStartProbeOutlivesControlBackend(t *testing.T) {
	t.Parallel()
	c, err := New(Config{ConnString: testURL, Prefix: testPrefix(t), SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	killed := 0
	c.afterProbe = func() {
		if killed > 0 {
			return
		}
		killed++
		pid := c.control.backendPID
		var ok bool
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
		require.True(t, ok)
		require.Eventually(t, func() bool {
			var n int
			require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n))
			return n == 0
		}, 10*time.Second, 5*time.Millisecond, "the control backend exits")
	}
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	require.Equal(t, 1, killed)
	mustAcquire(t, c.GetLock("x"), NoWait)
}
