package main

import (
	"context"
	"io"
	"log/slog"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

func TestMigrateThenMembers(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "migrate")
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, `^pgcoord schema (already at version|: applied )`, r.stdout)

	prefix := testPrefix(t)
	c := newCoord(t, prefix, "members-test")
	member := regexp.MustCompile(regexp.QuoteMeta(c.MemberID()) + ` .* yes\n`)

	r = runCLI(t, "members")
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, `^MEMBER_ID +HOSTNAME +PID +STARTED_AT +LAST_HEARTBEAT +HEARTBEAT_AGE +LIVE\n`, r.stdout)
	require.Regexp(t, member, r.stdout)

	require.NoError(t, c.Stop(context.Background()))
	r = runCLI(t, "members")
	require.Equal(t, exitOK, r.code)
	require.NotContains(t, r.stdout, c.MemberID(), "a stopped member is not live")

	r = runCLI(t, "members", "--all")
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, regexp.QuoteMeta(c.MemberID())+` .* no \(stopped\)\n`, r.stdout)
}

func TestLocksShowsHeldLock(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	c := newCoord(t, prefix, "locks-test")
	l := holdLock(t, c, "nightly-report")

	r := runCLI(t, "locks")
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, `^NAME +KEY +MODE +MEMBER_ID +GRANTED +SINCE +BACKEND_PID\n`, r.stdout)
	require.Regexp(t, regexp.QuoteMeta(prefix+"nightly-report")+` +-?\d+ +exclusive +`+
		regexp.QuoteMeta(c.MemberID())+` +yes `, r.stdout)

	require.NoError(t, l.Release(context.Background()))
	r = runCLI(t, "locks")
	require.Equal(t, exitOK, r.code)
	require.NotContains(t, r.stdout, prefix+"nightly-report")
}

func TestPrune(t *testing.T) {
	t.Parallel()
	url := freshDatabase(t)
	r := runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	prefix := testPrefix(t)
	c, err := pgcoord.New(pgcoord.Config{ConnString: url, Prefix: prefix, AgentID: "old", SkipMigrations: true, Retention: -1, Fencing: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	l := c.GetLock("job")
	ok, err := l.Acquire(context.Background(), pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	s := c.Semaphore("pool", 2)
	ok, err = s.Acquire(context.Background(), pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	e := c.Election("boss")
	require.NoError(t, e.Campaign(context.Background(), "v"))
	require.NoError(t, e.Resign(context.Background()))
	require.NoError(t, c.Stop(context.Background()))
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `UPDATE pgcoord.members SET stopped_at = now() - interval '3 hours'`)
	require.NoError(t, err)
	for _, sql := range []string{
		`UPDATE pgcoord.locks SET last_used = now() - interval '3 hours'`,
		`UPDATE pgcoord.fences SET updated_at = now() - interval '3 hours'`,
		`UPDATE pgcoord.semaphores SET last_used = now() - interval '3 hours'`,
		`UPDATE pgcoord.elections SET since = now() - interval '3 hours'`,
	} {
		_, err = conn.Exec(context.Background(), sql)
		require.NoError(t, err)
	}

	r = runCLI(t, "prune", "--older-than", "30m", "--database-url", url)
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--older-than must be at least 1h0m0s")

	r = runCLI(t, "prune", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, "pruned 0 member rows, 0 group memberships, 0 lock names, 0 fences, 0 semaphore limits and 0 elections unused for 24h\n", r.stdout, "3 hours is within 24h")
	r = runCLI(t, "prune", "--older-than", "2h", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, "pruned 1 member rows, 0 group memberships, 3 lock names, 3 fences, 1 semaphore limits and 1 elections unused for 2h\n", r.stdout,
		"the lock, the semaphore's slot and the election are names, each fenced")
	r = runCLI(t, "prune", "--older-than", "90m", "--json", "--database-url", url)
	require.Equal(t, exitOK, r.code)
	require.JSONEq(t, `{"members": 0, "names": 0, "group_members": 0, "fences": 0, "semaphore_limits": 0, "elections": 0, "older_than_seconds": 5400}`, r.stdout)
}
