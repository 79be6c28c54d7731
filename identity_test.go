package pgcoord

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Pinned: the tag is what operators see in pg_stat_activity.
func TestSessionTagVectors(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]string{
		"cinder-volume/host-1":                   "pgcoord:cinder-volume/host-1#ae04c057",
		"worker-7":                               "pgcoord:worker-7#df819cee",
		"ünïcode/ağent":                          "pgcoord:?n?code/a?ent#5dacf04c",
		"svc/" + strings.Repeat("0123456789", 7): "pgcoord:svc/012345678901234567890123456789012345678901#762ffdba",
	} {
		got := sessionTagFor(id)
		require.Equal(t, want, got, "tag of %q", id)
		require.LessOrEqual(t, len(got), maxAppNameLen)
	}
	// Ids that read the same once cut still get different tags.
	a, b := strings.Repeat("x", 100)+"a", strings.Repeat("x", 100)+"b"
	require.NotEqual(t, sessionTagFor(a), sessionTagFor(b))
}

// Sessions show the member id in pg_stat_activity, and held_locks still
// finds the member of a lock, for a plain id and for one the tag has to cut
// and sanitise.
func TestSessionsShowMemberID(t *testing.T) {
	t.Parallel()
	for _, agent := range []string{"plain-agent", "ağent-" + strings.Repeat("long", 20)} {
		prefix := testPrefix(t)
		c := newCoord(t, prefix, func(cfg *Config) { cfg.AgentID = agent })
		l := c.GetLock("tagged")
		mustAcquire(t, l, NoWait)

		var names []string
		rows, err := testPool.Query(ctx(t), `SELECT application_name FROM pg_stat_activity WHERE application_name = $1`, c.sessionTag)
		require.NoError(t, err)
		for rows.Next() {
			var n string
			require.NoError(t, rows.Scan(&n))
			names = append(names, n)
		}
		require.NoError(t, rows.Err())
		require.GreaterOrEqual(t, len(names), 2, "control and lock session carry the tag unchanged")
		if len(c.MemberID()) <= 40 {
			require.Equal(t, "pgcoord:"+c.MemberID(), names[0][:len(names[0])-9], "the member id is readable")
		}

		var member string
		require.NoError(t, testPool.QueryRow(ctx(t),
			`SELECT member_id FROM pgcoord.held_locks WHERE key = $1 AND granted`, l.Key()).Scan(&member))
		require.Equal(t, c.MemberID(), member)
		require.NoError(t, l.Release(ctx(t)))
	}
}

// The documented identities work for two processes on one host: the default
// (a random UUID) and hostname plus pid; a fixed id shared by two is refused.
func TestIdentityDefaults(t *testing.T) {
	t.Parallel()
	prefix := testPrefix(t)
	a := newCoord(t, prefix)
	b := newCoord(t, prefix)
	require.NotEqual(t, a.MemberID(), b.MemberID(), "the UUID default differs per coordinator")

	host, _ := os.Hostname()
	newCoord(t, prefix, func(cfg *Config) { cfg.AgentID = fmt.Sprintf("%s-%d", host, os.Getpid()) })

	fixed, err := New(Config{ConnString: testURL, Prefix: prefix, AgentID: fmt.Sprintf("%s-%d", host, os.Getpid()),
		SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	require.ErrorIs(t, fixed.Start(ctx(t)), ErrMemberExists)
}
