package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

// Names are the application's (a volume's, a tenant's), and may hold any
// character but NUL: a newline or a tab in one printed as it is split its
// row of the locks and members tables into two, or shifted its columns, so
// that a name could forge a row another member seemed to hold. Cells with
// such characters print quoted, with Go's escapes; JSON needs nothing.
func TestTablesQuoteControlCharacters(t *testing.T) {
	t.Parallel()
	url := freshDatabase(t)
	r := runCLI(t, "migrate", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	prefix := "tenant\n"
	c, err := pgcoord.New(pgcoord.Config{ConnString: url, Prefix: prefix, AgentID: "agent\tone", SkipMigrations: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	name := "vol\nforged  1  exclusive  someone-else  yes"
	l := holdLock(t, c, name)
	defer func() { _ = l.Release(context.Background()) }()

	r = runCLI(t, "locks", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 2, "a header and one row:\n%s", r.stdout)
	require.True(t, strings.HasPrefix(lines[1], strconv.Quote(prefix+name)+" "), lines[1])
	require.Contains(t, lines[1], " "+strconv.Quote(c.MemberID())+" ")

	r = runCLI(t, "members", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	lines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 2, "a header and one row:\n%s", r.stdout)
	require.True(t, strings.HasPrefix(lines[1], strconv.Quote(c.MemberID())+" "), lines[1])

	e := c.Election("boss")
	require.NoError(t, e.Campaign(context.Background(), "v"))
	r = runCLI(t, "leader", prefix+"boss", "--database-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 1, strings.Count(r.stdout, "\n"), r.stdout)
	require.True(t, strings.HasPrefix(r.stdout, strconv.Quote(prefix+"boss")+": "+strconv.Quote(c.MemberID())+" value="), r.stdout)
}
