// Package hatest runs pgcoord against a real highly available PostgreSQL
// (internal/hastack: etcd, PostgreSQL 15 under Patroni, HAProxy): planned
// switchovers, a leader node's death, a leader cut off from etcd, the old
// leader rejoining through pg_rewind, and a leader whose Patroni alone dies.
// It checks each through HAProxy and through a multi-host
// target_session_attrs=read-write string, and prints what it measured
// ("ha: ..." lines).
//
// These tests run under `make ha`, which sets PGCOORD_HA=1 after installing
// the stack's packages; without it they skip with a line saying so (make
// test does not run them). With it, a missing binary fails them.
package hatest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// haEnv gates the tests (see the package doc).
const haEnv = "PGCOORD_HA"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func needHA(t *testing.T) {
	t.Helper()
	if os.Getenv(haEnv) != "1" {
		t.Skipf("the Patroni cases run under make ha (%s=1)", haEnv)
	}
}

// report prints a line of the run's figures: to stdout, which make ha
// shows, and to the test log.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	line := "ha: " + fmt.Sprintf(format, args...)
	t.Log(line)
	fmt.Println(line)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ctx returns a context that ends with the test or after five minutes.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

// ms formats a duration in seconds with millisecond precision, signed.
func ms(d time.Duration) string {
	return fmt.Sprintf("%+.3fs", d.Seconds())
}
