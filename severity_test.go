package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestServerRefused: the heartbeat tells a statement's ERROR (the session
// goes on: no reconnect) from FATAL and from a broken connection by the
// untranslated severity, so a server whose lc_messages translates
// "ERROR" is not taken for a broken one. The two real errors come from the
// test server; the translated one is built by hand (this machine has no
// locale but C for the server to translate into).
func TestServerRefused(t *testing.T) {
	t.Parallel()
	conn, err := pgx.Connect(ctx(t), testURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, stmtErr := conn.Exec(ctx(t), `SELECT 1/0`)
	require.Error(t, stmtErr)
	require.True(t, serverRefused(stmtErr), "division by zero: %v", stmtErr)
	require.True(t, serverRefused(fmt.Errorf("pgcoord: beat: %w", stmtErr)), "wrapped")

	victim, err := pgx.Connect(ctx(t), testURL)
	require.NoError(t, err)
	defer victim.Close(context.Background())
	_, err = conn.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, victim.PgConn().PID())
	require.NoError(t, err)
	_, fatal := victim.Exec(ctx(t), `SELECT 1`)
	require.Error(t, fatal)
	require.False(t, serverRefused(fatal), "terminated: %v", fatal)

	require.True(t, serverRefused(&pgconn.PgError{Severity: "FEHLER", SeverityUnlocalized: "ERROR", Code: "53200"}),
		"translated ERROR")
	require.False(t, serverRefused(&pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01"}))
	require.True(t, serverRefused(&pgconn.PgError{Severity: "ERROR"}), "a server before 9.6 sends no untranslated severity")
	require.False(t, serverRefused(errors.New("read: connection reset by peer")))
	require.False(t, serverRefused(nil))
}
