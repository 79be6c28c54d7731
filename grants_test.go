package pgcoord

import (
	"context"
	"fmt"
	"os/exec"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// docs/grants.sql, run with psql as the docs say, is enough for a
// coordinator run with SkipMigrations and for every primitive and AcquireTx,
// as a login role that has only the group role the script grants to; and the
// role cannot change the schema. So the pasteable script cannot rot: a new
// table or function a primitive needs fails this test until the script
// grants it.
func TestGrantsScript(t *testing.T) {
	// Not parallel: pgcoord_app is a cluster-wide role, dropped at the end.
	admin := connect(t, testURL)
	role := fmt.Sprintf("pgcoord_grants_%d", prefixSeq.Add(1))
	_, err := admin.Exec(ctx(t), `CREATE ROLE `+role+` LOGIN PASSWORD 'app-pw' NOSUPERUSER NOCREATEDB NOCREATEROLE`)
	require.NoError(t, err)
	t.Cleanup(func() {
		bg := context.Background()
		_, _ = admin.Exec(bg, `DROP OWNED BY `+role)
		_, _ = admin.Exec(bg, `DROP ROLE `+role)
		_, _ = admin.Exec(bg, `DROP OWNED BY pgcoord_app`)
		_, _ = admin.Exec(bg, `DROP ROLE pgcoord_app`)
	})
	// Twice: the script can be run again.
	for range 2 {
		out, err := exec.Command(psqlPath(t), testURL, "-v", "ON_ERROR_STOP=1", "-f", "docs/grants.sql").CombinedOutput()
		require.NoError(t, err, "psql -f docs/grants.sql:\n%s", out)
	}
	_, err = admin.Exec(ctx(t), `GRANT pgcoord_app TO `+role)
	require.NoError(t, err)

	appURL := withUser(t, testURL, role, "app-pw")
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = appURL; cfg.Fencing = true })
	other := newCoord(t, p)

	// Locks: a try, a wait (wait_lock) behind another member, a token.
	l := c.GetLock("lock")
	mustAcquire(t, l, NoWait)
	require.Positive(t, l.Token())
	require.NoError(t, l.Release(ctx(t)))
	blocker := other.GetLock("waited")
	mustAcquire(t, blocker, NoWait)
	acquireAfterWait(t, c.GetLock("waited"), blocker)

	// Shared locks.
	r := c.GetLock("doc")
	mustAcquireShared(t, r, NoWait)
	require.NoError(t, r.Release(ctx(t)))

	// Elections, with an observer.
	e := c.Election("boss")
	require.NoError(t, e.Campaign(ctx(t), "v1"))
	require.NoError(t, e.Proclaim(ctx(t), "v2"))
	octx, cancel := context.WithCancel(ctx(t))
	require.Equal(t, "v2", (<-e.Observe(octx)).Value)
	cancel()
	require.NoError(t, e.Resign(ctx(t)))

	// Semaphores.
	s := c.Semaphore("pool", 2)
	mustTake(t, s, NoWait)
	require.NoError(t, s.Release(ctx(t)))

	// Groups, with a watch.
	wctx, wcancel := context.WithCancel(ctx(t))
	defer wcancel()
	evs, err := c.WatchGroup(wctx, "g")
	require.NoError(t, err)
	require.NoError(t, c.JoinGroup(ctx(t), "g", map[string]int{"v": 1}))
	require.NoError(t, c.UpdateCapabilities(ctx(t), "g", map[string]int{"v": 2}))
	ms, err := c.GroupMembers(ctx(t), "g")
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.NoError(t, c.LeaveGroup(ctx(t), "g"))
	wcancel()
	for range evs {
	}

	// Pruning (Config.Retention) as the role.
	_, err = c.Prune(ctx(t), MinRetention)
	require.NoError(t, err)

	// Transaction locks, fenced, on the role's own connection.
	conn := connect(t, appURL)
	require.NoError(t, pgx.BeginFunc(ctx(t), conn, func(tx pgx.Tx) error {
		ok, err := AcquireTx(ctx(t), tx, p, "tx", NoWait)
		require.True(t, ok)
		if err != nil {
			return err
		}
		token, err := AcquireFencedTx(ctx(t), tx, p, "tx-fenced", NoWait)
		require.Positive(t, token)
		return err
	}))

	// The role cannot change the schema.
	_, err = conn.Exec(ctx(t), `CREATE TABLE pgcoord.intruder (id int)`)
	require.Error(t, err)
	require.NoError(t, c.Stop(ctx(t)))
}
