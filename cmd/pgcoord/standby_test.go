package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// The commands' own connections skip a hot standby listed before the
// primary, as the library's sessions do (docs/ha.md), and refuse a
// standby alone. Before, the standby answered: members said "no live
// members" while one ran on the primary, and locks and prune failed on
// the standby's read-only tables (found by a review helper).
func TestCommandsSkipStandby(t *testing.T) {
	t.Parallel()
	p, err := pgtemp.StartPair(pgtemp.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	primary, standby := p.Primary(), p.Standby()
	ctx := context.Background()
	require.NoError(t, pgcoord.Migrate(ctx, primary.URL()))
	c, err := pgcoord.New(pgcoord.Config{ConnString: primary.URL(), SkipMigrations: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	l := c.GetLock("on-the-primary")
	ok, err := l.Acquire(ctx, pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok)

	// The standby has the schema and the member row (so the commands
	// would run there and answer wrongly), but not the primary's locks.
	sconn, err := pgx.Connect(ctx, standby.URL())
	require.NoError(t, err)
	defer sconn.Close(ctx)
	require.Eventually(t, func() bool {
		var n int
		err := sconn.QueryRow(ctx, `SELECT count(*) FROM pgcoord.members WHERE member_id = $1`, c.MemberID()).Scan(&n)
		return err == nil && n == 1
	}, 30*time.Second, 10*time.Millisecond, "the standby replays the member row")

	both := fmt.Sprintf("postgres://postgres@%s:%d,%s:%d/postgres?sslmode=disable",
		standby.Host(), standby.Port(), primary.Host(), primary.Port())
	r := runCLI(t, "members", "--database-url", both)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, c.MemberID(), "the live member, read on the primary")
	r = runCLI(t, "locks", "--database-url", both)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "on-the-primary")
	r = runCLI(t, "prune", "--database-url", both)
	require.Equal(t, exitOK, r.code, r.stderr)

	r = runCLI(t, "members", "--database-url", standby.URL())
	require.NotEqual(t, exitOK, r.code)
	require.Contains(t, r.stderr, "is a hot standby, not the primary")
}
