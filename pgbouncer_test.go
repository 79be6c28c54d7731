package pgcoord

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startPgBouncer runs a real PgBouncer (Debian's pgbouncer package, which
// .ci/run installs) in front of the test server with the given pool_mode,
// and returns a connection string through it. It runs as the postgres user
// when the tests run as root, since PgBouncer refuses to run as root.
// Each of extra is a line added to its [pgbouncer] section.
func startPgBouncer(t *testing.T, poolMode string, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("pgbouncer not found: install it (apt-get install pgbouncer; .ci/run does): %v", err)
	}
	server, err := url.Parse(testURL)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "pgcoord-pgbouncer-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	userName := server.User.Username()
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = 20
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = %s
%s`, server.Hostname(), server.Port(), port, filepath.Join(dir, "users.txt"), poolMode, filepath.Join(dir, "pgbouncer.log"), strings.Join(extra, "\n"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "users.txt"), []byte(fmt.Sprintf("%q \"\"\n", userName)), 0o644))

	cmd := exec.Command(bin, "-q", filepath.Join(dir, "pgbouncer.ini")) // -q: log to the file only
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running pgbouncer as root needs a postgres user")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	require.Eventually(t, func() bool {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			conn.Close()
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "pgbouncer did not start; log: %s", filepath.Join(dir, "pgbouncer.log"))

	through := *server
	through.Host = fmt.Sprintf("127.0.0.1:%d", port)
	return through.String()
}

// Behind PgBouncer in transaction mode session locks are not locks: Start
// refuses with a typed error that says what to do.
func TestPgBouncerTransactionModeRefused(t *testing.T) {
	t.Parallel()
	proxied := startPgBouncer(t, "transaction")
	c, err := New(Config{ConnString: proxied, Prefix: testPrefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrSessionLocksUnsupported)
	require.Contains(t, err.Error(), "session pooling")
	require.Contains(t, err.Error(), "AcquireTx", "the message points to the transaction-lock API")
	require.False(t, c.IsActive())
}

// Session mode keeps a server session per client: locks work through it,
// and exclude a coordinator connected directly.
func TestPgBouncerSessionModeWorks(t *testing.T) {
	t.Parallel()
	proxied := startPgBouncer(t, "session")
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = proxied })
	direct := newCoord(t, p)
	l := c.GetLock("bounced")
	mustAcquire(t, l, NoWait)
	requireBusy(t, direct.GetLock("bounced"))
	require.NoError(t, l.Release(ctx(t)))
	mustAcquire(t, direct.GetLock("bounced"), NoWait)
}

// Statement mode, like transaction mode, hands each statement a server
// session of its choice: Start refuses it.
func TestPgBouncerStatementModeRefused(t *testing.T) {
	t.Parallel()
	proxied := startPgBouncer(t, "statement")
	c, err := New(Config{ConnString: proxied, Prefix: testPrefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	err = c.Start(ctx(t))
	require.ErrorIs(t, err, ErrSessionLocksUnsupported)
	require.False(t, c.IsActive())
}

// In session mode PgBouncer runs server_reset_query (DISCARD ALL by
// default, which unlocks every advisory lock) when a client leaves, before
// it gives the server connection to another: a session of a coordinator
// that breaks leaves no lock behind. With server_reset_query empty, the
// server connection goes back to the pool still holding the locks (and the
// prepared statements) of the client that left, and the next client
// inherits them. Here the coordinator's own lock session, dialled again,
// gets that server connection: the lock it was told it lost stays held on
// the server for as long as that session lives (another coordinator never
// gets it), and every statement of the session fails with the server's
// untyped 42P05 (prepared statement already exists).
//
// Now a session that connects finds the server session reused (it has
// prepared statements or holds advisory locks, which a fresh one never
// has), ends it (its locks belong to a client gone, as DISCARD ALL would
// have freed them; closing the client connection only puts it back in the
// pool, where the next dial gets it again) and is refused with
// ErrSessionLocksUnsupported naming server_reset_query (see
// reusedBackend).
func TestPgBouncerWithoutResetLeavesNoLock(t *testing.T) {
	t.Parallel()
	proxied := startPgBouncer(t, "session", "server_reset_query =")
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString = proxied })
	direct := newCoord(t, p)
	x := c.GetLock("x")
	mustAcquire(t, x, NoWait)
	c.lockSs[0].forceClose(0)
	requireClosedWithin(t, x.Lost(), 5*time.Second, "the broken session's hold")
	// The lock session dials again, through the pool.
	y := c.GetLock("y")
	ok, err := y.Acquire(ctx(t), NoWait)
	if err != nil {
		require.ErrorIs(t, err, ErrSessionLocksUnsupported, "a typed error, not the server's 42P05")
	} else {
		require.True(t, ok)
		require.NoError(t, y.Release(ctx(t)))
	}
	// The lock c lost is not held by anybody for long (SessionTimeout
	// would free it were the server connection left idle; it is not).
	other := direct.GetLock("x")
	require.Eventually(t, func() bool {
		ok, err := other.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		return ok
	}, 2*time.Second, 20*time.Millisecond, "the lost lock stays held on the pooled server connection")
	require.NoError(t, other.Release(ctx(t)))
}
