package pgtemp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"
)

// TestMain checks that servers leave no goroutines behind once closed, as
// other packages' goleak checks depend on that.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	began := time.Now()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %s", time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// selectOne connects with pgx and runs SELECT 1.
func selectOne(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("SELECT 1 returned %d", n)
	}
	return nil
}

func tcpAccepts(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestLifecycle(t *testing.T) {
	s := start(t, Options{})

	port := s.Port()
	if s.Host() != "127.0.0.1" || port <= 0 {
		t.Fatalf("Host/Port = %q/%d", s.Host(), port)
	}
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	if s.URL() != want {
		t.Fatalf("URL = %q, want %q", s.URL(), want)
	}
	if !exists(filepath.Join(s.DataDir(), "PG_VERSION")) || !strings.HasPrefix(s.DataDir(), s.Dir()) {
		t.Fatalf("DataDir %q is not an initialised data dir under Dir %q", s.DataDir(), s.Dir())
	}
	if !tcpAccepts(port) {
		t.Fatal("server does not accept TCP connections")
	}
	if err := selectOne(s.URL()); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	if psql, err := exec.LookPath("psql"); err == nil {
		out, err := exec.Command(psql, "-X", "-At", "-d", s.URL(), "-c", "SELECT 1").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Fatalf("psql SELECT 1: %v: %s", err, out)
		}
	}
	if !strings.Contains(s.Log(), "ready to accept connections") {
		t.Fatalf("Log() lacks the ready line:\n%s", s.Log())
	}

	// Restart: same port, working again, and the data survives.
	if err := execSQL(s.URL(), "CREATE TABLE survives (x int); INSERT INTO survives VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Port() != port {
		t.Fatalf("Restart moved the port from %d to %d", port, s.Port())
	}
	if err := execSQL(s.URL(), "SELECT x FROM survives WHERE x = 42"); err != nil {
		t.Fatalf("after Restart: %v", err)
	}

	// StopServer makes connecting fail; StartServer brings it back.
	if err := s.StopServer(); err != nil {
		t.Fatalf("StopServer: %v", err)
	}
	if err := s.StopServer(); err != nil {
		t.Fatalf("second StopServer: %v", err)
	}
	if tcpAccepts(port) {
		t.Fatal("port still accepts after StopServer")
	}
	if err := selectOne(s.URL()); err == nil {
		t.Fatal("SELECT 1 succeeded on a stopped server")
	}
	if !exists(s.DataDir()) {
		t.Fatal("StopServer removed the data dir")
	}
	if err := s.StartServer(); err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	if err := s.StartServer(); err != nil {
		t.Fatalf("second StartServer: %v", err)
	}
	if err := selectOne(s.URL()); err != nil {
		t.Fatalf("after StartServer: %v", err)
	}

	// Close removes everything, and is idempotent.
	dir := s.Dir()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if exists(dir) {
		t.Fatalf("Close left %s behind", dir)
	}
	if tcpAccepts(port) {
		t.Fatal("port still accepts after Close")
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart after Close succeeded")
	}
	if !strings.Contains(s.Log(), "shut down") {
		t.Fatalf("Log() after Close lacks the shutdown:\n%s", s.Log())
	}
}

func execSQL(url, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Password roles must authenticate over TCP, so tests can check a wrong
// password is refused; the superuser stays password-free.
func TestPasswordRolesAndSettings(t *testing.T) {
	t.Parallel()
	s := start(t, Options{Settings: map[string]string{"max_connections": "200", "work_mem": "8MB"}})

	if err := execSQL(s.URL(), "CREATE ROLE app LOGIN PASSWORD 'right'"); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("127.0.0.1:%d/postgres?sslmode=disable", s.Port())
	if err := selectOne("postgres://app:right@" + base); err != nil {
		t.Fatalf("right password: %v", err)
	}
	err := selectOne("postgres://app:wrong@" + base)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
	}
	if err := selectOne("postgres://app@" + base); err == nil {
		t.Fatal("no password: connected, want refused")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for name, want := range map[string]string{
		"max_connections":     "200", // Settings override the defaults
		"work_mem":            "8MB",
		"fsync":               "off",
		"password_encryption": "scram-sha-256",
		"listen_addresses":    "127.0.0.1",
		"server_encoding":     "UTF8",
	} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// The C locale: PostgreSQL 16 dropped the lc_collate setting, so ask
	// the database, as every version from 14 answers.
	var collate string
	if err := conn.QueryRow(ctx, "SELECT datcollate FROM pg_database WHERE datname = current_database()").Scan(&collate); err != nil {
		t.Fatal(err)
	}
	if collate != "C" {
		t.Errorf("datcollate = %q, want %q", collate, "C")
	}
}

// A server whose port was taken while it was stopped reports that clearly,
// and starts again once the port is free.
func TestPortTakenWhileStopped(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.StopServer(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
	if err != nil {
		t.Fatal(err)
	}
	err = s.StartServer()
	l.Close()
	if !errors.Is(err, errPortInUse) {
		t.Fatalf("StartServer on a taken port: %v, want errPortInUse", err)
	}
	if err := s.StartServer(); err != nil {
		t.Fatalf("StartServer after freeing the port: %v", err)
	}
	if err := selectOne(s.URL()); err != nil {
		t.Fatal(err)
	}
}

// A postmaster that dies behind our back (a crash, the OOM killer) can be
// started again with StartServer or Restart.
func TestStartAfterPostmasterKilled(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	for _, restart := range []func() error{s.StartServer, s.Restart} {
		b, err := os.ReadFile(filepath.Join(s.DataDir(), "postmaster.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// The port closes a moment before the process is fully dead; wait
		// for the latter, which is what StartServer can see.
		for deadline := time.Now().Add(10 * time.Second); tcpAccepts(s.Port()) || ProcessAlive(pid); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("postmaster still alive 10s after SIGKILL")
			}
		}
		if err := restart(); err != nil {
			t.Fatalf("start after SIGKILL: %v", err)
		}
		if err := selectOne(s.URL()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFromEnv(t *testing.T) {
	const env = "PGTEMP_TEST_DATABASE_URL"
	t.Setenv(env, "postgres://someone@db.invalid:5432/x")
	url, cleanup, err := FromEnv(env, Options{})
	if err != nil || url != "postgres://someone@db.invalid:5432/x" || cleanup == nil {
		t.Fatalf("FromEnv with %s set = %q, %v", env, url, err)
	}
	cleanup()

	t.Setenv(env, "")
	url, cleanup, err = FromEnv(env, Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("FromEnv without %s: %v", env, err)
	}
	if err := selectOne(url); err != nil {
		cleanup()
		t.Fatal(err)
	}
	cleanup()
	if err := selectOne(url); err == nil {
		t.Fatal("server still up after cleanup")
	}
}

func TestNoBinaries(t *testing.T) {
	empty := t.TempDir()
	_, err := Start(Options{BinDir: empty})
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "apt-get install postgresql-15") {
		t.Fatalf("Start with empty BinDir: %v", err)
	}
	const env = "PGTEMP_TEST_DATABASE_URL"
	t.Setenv(env, "")
	_, cleanup, err := FromEnv(env, Options{BinDir: empty})
	cleanup()
	if err == nil || !strings.Contains(err.Error(), env) || !strings.Contains(err.Error(), "apt-get install postgresql-15") {
		t.Fatalf("FromEnv error does not say how to fix it: %v", err)
	}
	t.Log(err)

	t.Setenv(BinDirEnv, empty)
	if _, err := Start(Options{}); !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), BinDirEnv) {
		t.Fatalf("Start with empty $%s: %v", BinDirEnv, err)
	}
}

func TestFindBinDirDefault(t *testing.T) {
	t.Setenv(BinDirEnv, "")
	d, err := findBinDir("")
	if err != nil {
		t.Skipf("no PostgreSQL installed: %v", err)
	}
	if !hasServerBinaries(d) {
		t.Fatalf("findBinDir = %s without initdb/postgres", d)
	}
	if !versionLess("9.6", "15") || versionLess("16", "15") || !versionLess("15", "16") {
		t.Fatal("versionLess is not numeric")
	}
}

const reaperChildEnv = "PGTEMP_REAPER_CHILD"

// TestReaperChild is the child half of TestReaperCleansUpAfterOwnerDies: it
// starts a server, reports where it is, and waits to be SIGKILLed.
func TestReaperChild(t *testing.T) {
	if os.Getenv(reaperChildEnv) != "1" {
		t.Skip("helper process for TestReaperCleansUpAfterOwnerDies")
	}
	s, err := Start(Options{})
	if err != nil {
		fmt.Printf("ERROR=%v\n", strings.ReplaceAll(err.Error(), "\n", " | "))
		os.Exit(1)
	}
	fmt.Printf("DIR=%s\nPORT=%d\n", s.Dir(), s.Port())
	os.Stdout.Sync()
	time.Sleep(2 * time.Minute) // the parent kills us long before this
	s.Close()
}

func TestReaperCleansUpAfterOwnerDies(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestReaperChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), reaperChildEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var port int
	sc := bufio.NewScanner(out)
	for (dir == "" || port == 0) && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "DIR="):
			dir = strings.TrimPrefix(line, "DIR=")
		case strings.HasPrefix(line, "PORT="):
			port, _ = strconv.Atoi(strings.TrimPrefix(line, "PORT="))
		case strings.HasPrefix(line, "ERROR="):
			t.Errorf("child: %s", line)
		}
	}
	if dir == "" || port == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not report its server (dir %q, port %d)", dir, port)
	}
	if !exists(dir) || !tcpAccepts(port) {
		t.Fatalf("child's server is not up: dir %s exists=%v, port %d", dir, exists(dir), port)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for exists(dir) || tcpAccepts(port) {
		if time.Now().After(deadline) {
			t.Fatalf("10s after SIGKILL of the owner: dir %s exists=%v, port %d accepts=%v",
				dir, exists(dir), port, tcpAccepts(port))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
