package chaostest

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestProxyResetNamesItsVictims: a reset names exactly the sessions it
// ended, by the backend pids their BackendKeyData carried through the
// proxy, whatever else the server's sessions do meanwhile.
func TestProxyResetNamesItsVictims(t *testing.T) {
	t.Parallel()
	proxy, u := proxiedTestURL(t)
	for _, mode := range []string{"disable", "prefer"} { // prefer asks for SSL first: 'N'
		q := u.Query()
		q.Set("sslmode", mode)
		u.RawQuery = q.Encode()
		conn, err := pgx.Connect(ctx(t), u.String())
		require.NoError(t, err)
		var pid int32
		require.NoError(t, conn.QueryRow(ctx(t), "SELECT pg_backend_pid()").Scan(&pid))
		// With sslmode=prefer pgx first dials a connection the server
		// refuses TLS on ('N'), closes it and dials again: until the proxy
		// has seen that first one end, it is live too, and reset may pick
		// it alone (1 in 200 runs: n 1, no victim).
		require.Eventually(t, func() bool { return len(proxy.live()) == 1 }, 5*time.Second, time.Millisecond,
			"the one connection pgx kept")
		n, victims := proxy.reset(rand.New(rand.NewPCG(1, 2)))
		require.Equal(t, 1, n, "the one connection through the proxy")
		require.Equal(t, []string{sessionName(pid)}, victims, "sslmode=%s", mode)
		require.Error(t, conn.Ping(ctx(t)), "severed")
		_ = conn.Close(ctx(t))
	}
}

// TestKeySnifferAcrossChunks reads the pid however the server's stream is
// cut into chunks, and gives up on a stream it cannot read.
func TestKeySnifferAcrossChunks(t *testing.T) {
	msg := func(typ byte, body ...byte) []byte {
		m := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(m[1:], uint32(4+len(body)))
		return append(m, body...)
	}
	var stream []byte
	stream = append(stream, 'N')                                           // no SSL
	stream = append(stream, msg('R', 0, 0, 0, 0)...)                       // AuthenticationOk
	stream = append(stream, msg('S', []byte("TimeZone\x00UTC\x00")...)...) // ParameterStatus
	stream = append(stream, msg('K', 0, 0, 0x30, 0x39, 1, 2, 3, 4)...)     // pid 12345
	stream = append(stream, msg('Z', 'I')...)
	for size := 1; size <= len(stream); size++ {
		var k keySniffer
		var got int32
		for i := 0; i < len(stream); i += size {
			if p := k.read(stream[i:min(i+size, len(stream))]); p != 0 {
				got = p
			}
		}
		require.Equal(t, int32(12345), got, "chunks of %d bytes", size)
		require.True(t, k.done)
	}
	var k keySniffer
	require.Zero(t, k.read([]byte{'S', 0x16, 3, 1}), "TLS from here on")
	require.True(t, k.done)
	k = keySniffer{}
	require.Zero(t, k.read(msg('E', []byte("SFATAL\x00")...)))
	require.True(t, k.done, "refused: no key will come")
}
