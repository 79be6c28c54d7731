// Package pgtemp starts a throwaway PostgreSQL server from the machine's
// PostgreSQL binaries, for tests, the demo and the CLI, and removes it
// afterwards.
//
// Every server lives in its own temporary directory (data dir, socket dir and
// server log) and listens on a free TCP port on 127.0.0.1, so it never clashes
// with other PostgreSQL servers on the machine. A small reaper shell process
// watches the owning process through a pipe and stops the server and removes
// the directory when the owner goes away, even if it is SIGKILLed or a test
// calls os.Exit, so crashed test runs do not leave postmasters and gigabytes
// of data directories behind.
package pgtemp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoBinaries is wrapped by the error Start returns when it cannot find
// initdb and postgres, so callers (FromEnv, the CLI) can tell "PostgreSQL is
// not installed" apart from "PostgreSQL failed to start" and give the right
// advice.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found")

// BinDirEnv names the environment variable that overrides where initdb and
// postgres are looked up, for machines with a non-Debian layout.
const BinDirEnv = "PGCOORD_PG_BINDIR"

const (
	// host is the only address the server listens on: loopback keeps the
	// throwaway server private and avoids IPv6-only surprises.
	host = "127.0.0.1"
	// readyTimeout bounds how long one postmaster start may take before we
	// give up and report the server log.
	readyTimeout = 30 * time.Second
	// portAttempts is how many fresh ports Start tries: between closing our
	// probe listener and the postmaster binding, another process may take it.
	portAttempts = 5
	// logTailSize is how much of the server log Log returns.
	logTailSize = 64 << 10
	// reaperTimeout bounds how long Close waits for the reaper to stop the
	// server and delete the directory.
	reaperTimeout = 30 * time.Second
)

// Options tune Start; the zero value is fine.
type Options struct {
	// BinDir overrides where initdb/postgres live. Default: $PGCOORD_PG_BINDIR, else the highest
	// version under /usr/lib/postgresql/*/bin, else `pg_config --bindir`, else PATH.
	BinDir string
	// Settings are extra `-c name=value` server settings (e.g. "max_connections": "200").
	// They are applied after the defaults, so they override them.
	Settings map[string]string
	// Logf, if set, receives progress lines (not the server log).
	Logf func(format string, args ...any)
}

// Server is a running throwaway PostgreSQL.
//
// Its methods are safe for concurrent use. After Close every method that
// would touch the server returns an error.
type Server struct {
	binDir  string
	dir     string
	dataDir string
	sockDir string
	logPath string
	// ownerPidPath records the pid of the postmaster we started, for the
	// reaper: postmaster.pid does not exist yet in the first milliseconds
	// after fork, and we may die exactly then.
	ownerPidPath string
	// cred is the OS user the server runs as; nil means "as ourselves".
	cred *syscall.Credential
	env  []string
	args []string // "-c name=value" settings, defaults first
	logf func(format string, args ...any)

	mu         sync.Mutex
	port       int
	pm         *postmaster // nil while stopped
	reaper     *exec.Cmd
	reaperW    *os.File // closing it (or our death) tells the reaper to clean up
	reaperDone chan struct{}
	closed     bool
	closeErr   error
	finalLog   string // server log snapshot taken by Close, as the file is gone afterwards
}

// live keeps every open Server reachable. Without it a caller that drops the
// *Server (say, keeps only FromEnv's URL) would let the garbage collector
// finalize the reaper pipe, and the reaper would kill a server still in use.
var live = struct {
	sync.Mutex
	m map[*Server]struct{}
}{m: map[*Server]struct{}{}}

// Start initialises a data directory and starts the server; it waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	began := time.Now()
	s, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	if err := s.initdb(); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.listen(); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.logf("pgtemp: PostgreSQL ready at %s (dir %s, %s)", s.urlLocked(), s.dir, time.Since(began).Round(time.Millisecond))
	return s, nil
}

// newServer finds the binaries, makes the temporary directory and starts
// its reaper; the data directory is still empty. Close undoes it all.
func newServer(opts Options) (*Server, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	if err := checkReachable(binDir, cred); err != nil {
		return nil, err
	}
	dir, err := makeTempRoot(cred)
	if err != nil {
		return nil, err
	}

	s := &Server{
		binDir:       binDir,
		dir:          dir,
		dataDir:      filepath.Join(dir, "data"),
		sockDir:      filepath.Join(dir, "sock"),
		logPath:      filepath.Join(dir, "postgres.log"),
		ownerPidPath: filepath.Join(dir, "owner-postmaster.pid"),
		cred:         cred,
		env:          withLibraryPath(childEnv(dir), bundledLibDir(binDir)),
		args:         serverSettings(opts.Settings),
		logf:         logf,
	}
	// The reaper comes first so that even a crash during initdb leaves no
	// directory behind.
	if err := s.startReaper(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	live.Lock()
	live.m[s] = struct{}{}
	live.Unlock()
	return s, nil
}

// URL is a superuser connection string: postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.urlLocked()
}

func (s *Server) urlLocked() string {
	return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable", host, s.port)
}

// Port is the TCP port the server listens on; it stays the same across
// Restart and StopServer/StartServer so URLs handed out remain valid.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// Host is the address the server listens on, always "127.0.0.1".
func (s *Server) Host() string { return host }

// DataDir is the server's data directory (PGDATA).
func (s *Server) DataDir() string { return s.dataDir }

// Dir is the temporary root holding the data directory, the socket
// directory and the server log; Close removes it.
func (s *Server) Dir() string { return s.dir }

// SocketDir is the Unix-socket directory, for clients such as psql -h.
func (s *Server) SocketDir() string { return s.sockDir }

// BinDir is the directory the server binaries were taken from, so callers
// can run the matching psql, pg_dump and friends.
func (s *Server) BinDir() string { return s.binDir }

// Close stops the server (immediate) and removes the temp directory. Idempotent.
// Later calls return the first call's result.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closeErr
	}
	s.closed = true

	var errs []error
	// Stop the postmaster ourselves rather than leaving it to the reaper: we
	// are its parent, and only a Wait from us reaps it and ends the waiter
	// goroutine (goleak in other packages checks for those).
	if err := s.stopLocked(syscall.SIGQUIT); err != nil {
		errs = append(errs, err)
	}
	s.finalLog = s.logTail()

	if s.reaperW != nil {
		// EOF on its stdin is the reaper's signal to clean up.
		_ = s.reaperW.Close()
		select {
		case <-s.reaperDone:
		case <-time.After(reaperTimeout):
			errs = append(errs, fmt.Errorf("pgtemp: reaper did not finish within %s; killing it", reaperTimeout))
			_ = syscall.Kill(-s.reaper.Process.Pid, syscall.SIGKILL)
			<-s.reaperDone
		}
	}
	// Belt and braces: the reaper normally removed it already.
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgtemp: remove %s: %w", s.dir, err))
	}

	live.Lock()
	delete(live.m, s)
	live.Unlock()
	s.closeErr = errors.Join(errs...)
	return s.closeErr
}

// FromEnv returns url from the named environment variable when it is set, else starts a server:
// returns the url, a cleanup func (no-op for an env url), and an error whose message is clear
// about what failed and how to fix it (e.g. "no PostgreSQL server binaries found: install
// postgresql-15 (apt-get install postgresql-15) or set PGCOORD_TEST_DATABASE_URL").
// cleanup is never nil, so it may be deferred before err is checked.
func FromEnv(envVar string, opts Options) (url string, cleanup func(), err error) {
	noop := func() {}
	if envVar != "" {
		if u := strings.TrimSpace(os.Getenv(envVar)); u != "" {
			return u, noop, nil
		}
	}
	s, err := Start(opts)
	if err != nil {
		if envVar == "" {
			return "", noop, err
		}
		if errors.Is(err, ErrNoBinaries) {
			return "", noop, fmt.Errorf("%w; or set %s to the URL of an existing server", err, envVar)
		}
		return "", noop, fmt.Errorf("%s is not set, so a throwaway PostgreSQL was started, and that failed: %w (set %s to the URL of an existing server to skip this)", envVar, err, envVar)
	}
	return s.URL(), func() { _ = s.Close() }, nil
}
