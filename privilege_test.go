package pgcoord

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// appRole creates a login role (password "app-pw") with exactly the grants
// the README lists for a coordinator run with SkipMigrations, plus the given
// CREATE ROLE options, and drops it when the test ends.
func appRole(t *testing.T, options string) string {
	t.Helper()
	return appRoleOn(t, testURL, options)
}

// appRoleOn is appRole on the server at url.
func appRoleOn(t *testing.T, url, options string) string {
	t.Helper()
	admin := connect(t, url)
	role := fmt.Sprintf("pgcoord_app_%d", prefixSeq.Add(1))
	for _, stmt := range []string{
		`CREATE ROLE ` + role + ` LOGIN PASSWORD 'app-pw' NOSUPERUSER NOCREATEDB NOCREATEROLE ` + options,
		`GRANT USAGE ON SCHEMA pgcoord TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.members TO ` + role,
		`GRANT SELECT, INSERT, UPDATE (last_used), DELETE ON pgcoord.locks TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.lock_since TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.long_waits TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.wait_queue TO ` + role,
		`GRANT SELECT ON pgcoord.live_members, pgcoord.held_locks, pgcoord.schema_migrations TO ` + role,
		`GRANT USAGE ON SEQUENCE pgcoord.fencing_token TO ` + role,
		`GRANT EXECUTE ON FUNCTION pgcoord.lock_key(text), pgcoord.wait_lock(bigint, integer), pgcoord.next_token() TO ` + role,
		// With Config.Fencing:
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pgcoord.fences TO ` + role,
		`GRANT EXECUTE ON FUNCTION pgcoord.fence_ok(bigint, bigint) TO ` + role,
	} {
		_, err := admin.Exec(ctx(t), stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = admin.Exec(context.Background(), `DROP ROLE `+role)
	})
	return role
}

// The grants the README lists are enough for a coordinator that runs with
// SkipMigrations as a role with no superuser and no DDL rights.
func TestLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	role := appRole(t, "")
	p := testPrefix(t)
	appURL := withUser(t, testURL, role, "app-pw")
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = appURL; cfg.Fencing = true })
	other := newCoord(t, p)
	l := c.GetLock("least")
	mustAcquire(t, l, NoWait)
	// A wait (wait_lock) as the app role, too.
	blocker := other.GetLock("waited")
	mustAcquire(t, blocker, NoWait)
	w := c.GetLock("waited")
	acquireAfterWait(t, w, blocker)
	require.NoError(t, w.Release(ctx(t)))
	require.NoError(t, l.Release(ctx(t)))
	// Pruning (Config.Retention) as the app role.
	_, err := c.Prune(ctx(t), MinRetention)
	require.NoError(t, err)

	// The role cannot change the schema.
	conn := connect(t, appURL)
	_, err = conn.Exec(ctx(t), `CREATE TABLE pgcoord.intruder (id int)`)
	require.Error(t, err)
	require.NoError(t, c.Stop(ctx(t)))
}

// lockedBuffer is a bytes.Buffer safe for the logger's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// No log line and no error carries the password, through a start, a lost
// session, a failed reconnect-free heartbeat and a stop.
func TestNoSecretInLogsOrErrors(t *testing.T) {
	t.Parallel()
	role := appRole(t, "")
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = withUser(t, testURL, role, "app-pw")
		cfg.Logger = logger
	})
	l := c.GetLock("secret")
	mustAcquire(t, l, NoWait)
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, l.Key()))
	require.NoError(t, err)
	requireClosedWithin(t, l.Lost(), 5*time.Second, "Lost")
	relErr := l.Release(ctx(t))
	require.ErrorIs(t, relErr, ErrLockLost)
	require.NoError(t, c.Stop(ctx(t)))
	require.Contains(t, logs.String(), "locks lost", "the loss was logged")
	require.NotContains(t, logs.String(), "app-pw")
	require.NotContains(t, relErr.Error(), "app-pw")

	bad, err := New(Config{ConnString: withUser(t, testURL, role, "wrong-app-pw"), Logger: logger})
	require.NoError(t, err)
	err = bad.Start(ctx(t))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "wrong-app-pw")
	require.NotContains(t, logs.String(), "wrong-app-pw")
}
