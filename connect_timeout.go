package pgcoord

import (
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultConnectTimeout bounds each connection attempt (TCP, TLS and the
// server's startup reply, per host) when the connection string sets no
// connect_timeout (nor PGCONNECT_TIMEOUT): without it, a server that accepts
// the connection and never answers would hang Start, a reconnect or Migrate
// for as long as TCP keeps the socket, which is forever on a live network.
// Ten seconds is long enough for a loaded server's TLS handshake and short
// enough that a black-holed server fails Start (with the dial's error,
// wrapping a *pgconn.ConnectError) instead of hanging.
const DefaultConnectTimeout = 10 * time.Second

// withConnectTimeout fills in DefaultConnectTimeout when cc has none.
func withConnectTimeout(cc *pgx.ConnConfig) {
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
}
