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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startPgBouncer runs a real PgBouncer (Debian's pgbouncer package, which
// .ci/run installs) in front of the test server with the given pool_mode,
// and returns a connection string through it. It runs as the postgres user
// when the tests run as root, since PgBouncer refuses to run as root.
func startPgBouncer(t *testing.T, poolMode string) string {
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
`, server.Hostname(), server.Port(), port, filepath.Join(dir, "users.txt"), poolMode, filepath.Join(dir, "pgbouncer.log"))
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
