package pgcoord

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// A migration the server refuses (here an object of the same name already
// in schema pgcoord) fails Migrate with the server's error, reachable with
// errors.As, and the version that failed. golang-migrate's error carried the
// whole migration file (25 kB, 560 lines, for the first one) into the
// message Start logs and `pgcoord migrate` prints, and did not unwrap to
// the *pgconn.PgError, so a caller could not read the SQLSTATE.
func TestFailedMigrationErrorIsShortAndTyped(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	conn := connect(t, dbURL)
	_, err := conn.Exec(ctx(t), `CREATE SCHEMA pgcoord; CREATE TABLE pgcoord.elections (x int)`)
	require.NoError(t, err)

	err = Migrate(ctx(t), dbURL)
	require.Error(t, err)
	require.Less(t, len(err.Error()), 1000, "no migration file in the message: %.2000s", err.Error())
	var pg *pgconn.PgError
	require.True(t, errors.As(err, &pg), "the server's error is reachable: %v", err)
	require.Equal(t, "42P07", pg.Code)
	require.Contains(t, err.Error(), `migration 100 failed`)
	require.Contains(t, err.Error(), `relation "elections" already exists`)
}
