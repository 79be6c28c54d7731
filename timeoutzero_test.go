package pgcoord

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// connect_timeout=0, which libpq reads as "wait forever", parses to the
// same ConnectTimeout as no setting at all (pgx cannot tell them apart), so
// pgcoord bounds it by DefaultConnectTimeout, as documented in docs/cli.md;
// a set value is kept.
func TestConnectTimeoutZeroIsBounded(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]time.Duration{
		"postgres://u@h/d":                     DefaultConnectTimeout,
		"postgres://u@h/d?connect_timeout=0":   DefaultConnectTimeout,
		"postgres://u@h/d?connect_timeout=600": 10 * time.Minute,
	} {
		cc, err := pgx.ParseConfig(url)
		require.NoError(t, err)
		withConnectTimeout(cc)
		require.Equal(t, want, cc.ConnectTimeout, url)
	}
}
