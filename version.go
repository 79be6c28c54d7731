package pgcoord

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrUnsupportedServer is returned by Start, Migrate and MigratePool (and so
// by `pgcoord migrate`) when the server is older than PostgreSQL 14, the
// oldest major version pgcoord supports: 13 and older are past their end of
// life, and their pg_locks has no waitstart column, which the migrations'
// views read. The check costs no round trip: it reads the server_version
// the server reports when a connection opens. Upgrade the server.
var ErrUnsupportedServer = errors.New("pgcoord: unsupported PostgreSQL server version")

// minServerMajor is the oldest supported major version.
const minServerMajor = 14

// checkServerVersion refuses a server older than minServerMajor, from the
// server_version parameter the server sent at start-up ("13.23",
// "18.4 (Debian 18.4-1.pgdg120+1)", "9.6.24", "19beta1"). A server that
// sends none, or one that does not parse, passes: pgcoord cannot tell, and
// its first statements will.
func checkServerVersion(conn *pgx.Conn) error {
	// CockroachDB reports server_version 13.0.0: say what it really is.
	if err := refuseAnnouncedFakeLocks(conn); err != nil {
		return err
	}
	v := conn.PgConn().ParameterStatus("server_version")
	// serverMajor (session.go) is 0 when it cannot read one.
	if major := serverMajor(v); major == 0 || major >= minServerMajor {
		return nil
	}
	return fmt.Errorf("%w: the server is PostgreSQL %s; pgcoord needs PostgreSQL %d or newer (13 and older are past their end of life)", ErrUnsupportedServer, strings.TrimSpace(v), minServerMajor)
}
