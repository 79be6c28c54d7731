package main

import (
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
)

// silentServer accepts TCP connections and never answers (a stopped server
// process, a black-holing proxy). Everything is closed at the end of the test.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// Against a server that accepts and never answers, with no connect_timeout
// in the URL, every command gives up after pgcoord.DefaultConnectTimeout and
// exits 69, and run and elect never run their command. (Before the default,
// each hung for as long as the socket lived.)
func TestSilentServerBounded(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("postgres://pgcoord@%s/pgcoord?sslmode=disable", silentServer(t))
	marker := filepath.Join(t.TempDir(), "ran")
	cmds := [][]string{
		{"locks"},
		{"members", "--all"},
		{"prune"},
		{"migrate", "--status"},
		{"migrate"},
		{"leader", "job"},
		{"leader", "--watch", "job"},
		{"run", "--lock", "job", "--", "touch", marker},
		{"elect", "job", "--", "touch", marker},
	}
	// All at once: each takes the whole connect timeout.
	procs := make([]*cliProc, len(cmds))
	for i, args := range cmds {
		// The URL goes before NAME and "--": what follows is the command's.
		procs[i] = startCLI(t, false, append([]string{args[0], "--database-url", url}, args[1:]...)...)
	}
	bound := pgcoord.DefaultConnectTimeout + 10*time.Second // process start and exit under -race, on a loaded machine
	for i, p := range procs {
		r := p.wait(t, bound+30*time.Second)
		require.Equal(t, exitUnavailable, r.code, "%v\n%s", cmds[i], r.stderr)
		require.Contains(t, r.stderr, "timeout", "%v", cmds[i])
		require.Less(t, r.took, bound, "%v", cmds[i])
		require.GreaterOrEqual(t, r.took, pgcoord.DefaultConnectTimeout-time.Second, "%v", cmds[i])
	}
	require.NoFileExists(t, marker, "run and elect must not run their command without the lock")
}
