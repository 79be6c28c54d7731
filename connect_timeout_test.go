package pgcoord

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// silentServer accepts TCP connections and never answers, like a server
// whose process is stopped or a proxy whose backend black-holes packets. It
// returns its address; the listener and the accepted sockets are closed at
// the end of the test.
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

// TestStartBoundedAgainstSilentServer: with no connect_timeout in the
// connection string and no deadline on its ctx, Start against a server that
// accepts and never answers fails within DefaultConnectTimeout (before the
// default was applied, it hung for as long as the socket lived).
func TestStartBoundedAgainstSilentServer(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	c, err := New(Config{
		ConnString: fmt.Sprintf("postgres://pgcoord@%s/pgcoord?sslmode=disable", addr),
		Logger:     quietLogger(),
	})
	require.NoError(t, err)
	began := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Start(context.Background()) }()
	select {
	case err = <-errc:
	case <-time.After(DefaultConnectTimeout + 20*time.Second):
		t.Fatalf("Start did not return within %v against a silent server", DefaultConnectTimeout+20*time.Second)
	}
	took := time.Since(began)
	t.Logf("Start against a silent server: %v after %v", err, took.Round(time.Millisecond))
	require.Error(t, err)
	var ce *pgconn.ConnectError
	require.ErrorAs(t, err, &ce, "a dial that timed out is a connect error")
	require.GreaterOrEqual(t, took, DefaultConnectTimeout-time.Second, "the default bound applies, not something shorter")
	require.Less(t, took, DefaultConnectTimeout+5*time.Second)
	require.NoError(t, c.Stop(context.Background()))
}
