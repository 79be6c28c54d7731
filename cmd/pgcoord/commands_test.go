package main

import (
	"context"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
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
