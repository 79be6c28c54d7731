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
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
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

// postmaster is one run of the server process.
type postmaster struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
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

// listen starts the postmaster of a new server on a free port, trying
// another port when one is taken before the server binds it. s is not
// shared yet, so the *Locked helpers may run without the lock.
func (s *Server) listen() error {
	for attempt := 1; ; attempt++ {
		var err error
		if s.port, err = freePort(); err != nil {
			return err
		}
		err = s.startLocked()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return err
		}
		s.logf("pgtemp: port %d was taken before the server bound it; trying another", s.port)
	}
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

// Restart stops the server fast (pg_ctl stop -m fast, or immediate) and starts it again on the same
// port and data dir, waiting until it accepts connections again. Used by fault tests.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if err := s.stopLocked(syscall.SIGINT); err != nil {
		return err
	}
	return s.startSamePortLocked()
}

// StopServer stops the postmaster without removing anything (for tests that need the server down); StartServer starts it again.
// It uses a fast shutdown, so open connections are terminated. Stopping a
// stopped server is a no-op.
func (s *Server) StopServer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	return s.stopLocked(syscall.SIGINT)
}

// StartServer starts a server stopped by StopServer again, on the same port,
// and waits until it accepts connections. Starting a running server is a
// no-op.
func (s *Server) StartServer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if s.runningLocked() {
		return nil
	}
	return s.startSamePortLocked()
}

// runningLocked reports whether our postmaster is alive, forgetting one that
// died on its own (crash, external kill) so it can be started again.
func (s *Server) runningLocked() bool {
	if s.pm == nil {
		return false
	}
	select {
	case <-s.pm.done:
	default:
		if ProcessAlive(s.pm.cmd.Process.Pid) {
			return true
		}
		// Dead but not yet reaped by our Wait goroutine; that is imminent.
		<-s.pm.done
	}
	s.pm = nil
	_ = os.Remove(s.ownerPidPath)
	return false
}

// ProcessAlive reports whether pid is running, as opposed to a zombie
// waiting to be reaped: after an external SIGKILL the waiter goroutine may
// lag a little, and StartServer must not mistake the corpse for a server.
// The HA harness (internal/hastack) uses it for its processes too.
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// No /proc: trust the waiter goroutine; a reaped pid has no entry.
		return !errors.Is(err, os.ErrNotExist) || !procMounted()
	}
	// The state follows the parenthesised command name, which may itself
	// contain parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	switch b[i+2] {
	case 'Z', 'X', 'x':
		return false
	}
	return true
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

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

// Log returns the tail (last ~64 KiB) of the server log, for error messages.
// After Close it returns the tail as it was when the server stopped.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.finalLog
	}
	return s.logTail()
}

func (s *Server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailSize {
		if _, err := f.Seek(fi.Size()-logTailSize, io.SeekStart); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, logTailSize))
	if len(b) == logTailSize {
		// Drop the partial first line of a cut log.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
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

var (
	errClosed    = errors.New("pgtemp: server is closed")
	errPortInUse = errors.New("pgtemp: port already in use")
	// errOldChildren means children of a killed postmaster still hold its
	// shared memory; they notice the death and exit within moments.
	errOldChildren = errors.New("pgtemp: processes of the previous postmaster are still running")
)

// initdb creates the cluster and installs our pg_hba.conf.
func (s *Server) initdb() error {
	s.logf("pgtemp: initdb %s (binaries in %s)", s.dataDir, s.binDir)
	cmd := s.command(filepath.Join(s.binDir, "initdb"),
		"-D", s.dataDir,
		"-U", "postgres",
		"-A", "trust",
		"--auth-local=trust", "--auth-host=trust",
		"--no-sync", // a throwaway cluster need not survive a power cut
		"-E", "UTF8",
		"--locale=C",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtemp: initdb failed: %w\n%s", err, tailLines(string(out), 40))
	}
	// Trust for the superuser keeps tests and tools password-free; every
	// other role must use its password over TCP so tests can create
	// password roles and check that a wrong password is refused.
	hba := `# Written by pgcoord's pgtemp for a throwaway test server.
local all all                trust
local replication all        trust
host  all postgres 127.0.0.1/32 trust
host  replication postgres 127.0.0.1/32 trust
host  all postgres ::1/128      trust
host  all all      127.0.0.1/32 scram-sha-256
host  all all      ::1/128      scram-sha-256
`
	// Overwriting the existing file keeps its owner (the server user).
	if err := os.WriteFile(filepath.Join(s.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("pgtemp: write pg_hba.conf: %w", err)
	}
	return nil
}

// command builds an exec.Cmd that runs as the server user, in its own
// process group so a Ctrl-C aimed at `go test` does not hit it half-way.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir // the server user may not be able to reach our cwd
	cmd.Env = s.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	return cmd
}

// startSamePortLocked starts the postmaster on the port it had, retrying
// briefly in case something grabbed the port while the server was down, or
// children of a postmaster that was killed (by a fault test, the OOM killer)
// have not exited yet.
func (s *Server) startSamePortLocked() error {
	portTries := 0
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.startLocked()
		switch {
		case errors.Is(err, errPortInUse):
			if portTries++; portTries >= portAttempts {
				return err
			}
		case errors.Is(err, errOldChildren):
			if time.Now().After(deadline) {
				return err
			}
		default:
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startLocked starts the postmaster on s.port and waits until it is ready.
func (s *Server) startLocked() error {
	if s.runningLocked() {
		return nil
	}
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtemp: open server log: %w", err)
	}
	var logStart int64
	if fi, err := logFile.Stat(); err == nil {
		logStart = fi.Size()
	}
	args := []string{"-D", s.dataDir, "-p", strconv.Itoa(s.port), "-k", s.sockDir}
	args = append(args, s.args...)
	cmd := s.command(filepath.Join(s.binDir, "postgres"), args...)
	// An *os.File is handed to the child as is: no copying goroutine.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	err = cmd.Start()
	logFile.Close()
	if err != nil {
		return fmt.Errorf("pgtemp: start postgres: %w", err)
	}
	pm := &postmaster{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pm.done)
	}()
	s.pm = pm
	_ = os.WriteFile(s.ownerPidPath, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)

	if err := s.waitReady(pm, logStart); err != nil {
		_ = s.stopLocked(syscall.SIGQUIT)
		return err
	}
	return nil
}

// waitReady polls until the postmaster reports "ready" in postmaster.pid and
// accepts a TCP connection, or exits, or readyTimeout passes.
func (s *Server) waitReady(pm *postmaster, logStart int64) error {
	deadline := time.Now().Add(readyTimeout)
	addr := net.JoinHostPort(host, strconv.Itoa(s.port))
	for {
		select {
		case <-pm.done:
			runLog := s.logSince(logStart)
			if strings.Contains(runLog, "Address already in use") || strings.Contains(runLog, "could not bind") {
				return fmt.Errorf("%w: %d", errPortInUse, s.port)
			}
			if strings.Contains(runLog, "pre-existing shared memory block") {
				return fmt.Errorf("%w: %s", errOldChildren, tailLines(runLog, 2))
			}
			return fmt.Errorf("pgtemp: postgres exited during startup (%v); server log:\n%s", pm.cmd.ProcessState, tailLines(s.logTail(), 40))
		default:
		}
		if pidFileReady(filepath.Join(s.dataDir, "postmaster.pid"), pm.cmd.Process.Pid) {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtemp: postgres not ready on %s after %s; server log:\n%s", addr, readyTimeout, tailLines(s.logTail(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidFileReady reports whether postmaster.pid belongs to pid and says the
// server accepts connections (line 8, PM_STATUS, is "ready" since PG 10,
// or "standby" for a hot standby that accepts read-only connections).
func pidFileReady(path string, pid int) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 8 || strings.TrimSpace(lines[0]) != strconv.Itoa(pid) {
		return false
	}
	status := strings.TrimSpace(lines[7])
	return status == "ready" || status == "standby"
}

func (s *Server) logSince(off int64) string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, logTailSize))
	return string(b)
}

// stopLocked sends sig (SIGINT = fast, SIGQUIT = immediate shutdown) to the
// postmaster and waits for it, escalating to immediate and then SIGKILL if it
// hangs. The postmaster is our child, so signalling it directly is exactly
// what pg_ctl stop would do, without pg_ctl's one-second polling.
func (s *Server) stopLocked(sig syscall.Signal) error {
	pm := s.pm
	if pm == nil {
		return nil
	}
	defer func() {
		s.pm = nil
		_ = os.Remove(s.ownerPidPath)
	}()
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{sig, 15 * time.Second}, {syscall.SIGQUIT, 10 * time.Second}, {syscall.SIGKILL, 10 * time.Second}}
	if sig == syscall.SIGQUIT {
		steps = steps[1:]
	}
	for _, st := range steps {
		_ = pm.cmd.Process.Signal(st.sig)
		select {
		case <-pm.done:
			return nil
		case <-time.After(st.wait):
			s.logf("pgtemp: postgres did not stop within %s after %v; escalating", st.wait, st.sig)
		}
	}
	<-pm.done
	return nil
}

// reaperScript runs as `sh -c reaperScript pgtemp-reaper DIR DATADIR` with
// its stdin on a pipe whose only writer is the owning process. It blocks on
// that pipe; EOF comes when Close closes it or when the owner dies in any way
// (the kernel closes the owner's descriptors even on SIGKILL). Then it stops
// the postmaster, whichever pid it has now (Restart changes it), and deletes
// DIR. It ignores terminal and termination signals so that it outlives
// whatever killed its owner.
const reaperScript = `
trap '' HUP INT QUIT TERM PIPE
dir=$1
data=$2
cat >/dev/null 2>&1
# Pids get reused: only signal a live process whose command line names our
# data directory. A zombie has an empty command line, so it counts as gone.
ours() {
	[ -r "/proc/$1/cmdline" ] && tr '\000' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$data"
}
for f in "$data/postmaster.pid" "$dir/owner-postmaster.pid"; do
	pid=$(head -n 1 "$f" 2>/dev/null)
	case "$pid" in ''|*[!0-9]*) continue ;; esac
	ours "$pid" || continue
	kill -QUIT "$pid" 2>/dev/null
	i=0
	while ours "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
	ours "$pid" && kill -KILL "$pid" 2>/dev/null
done
i=0
while [ -e "$dir" ] && [ "$i" -lt 50 ]; do
	rm -rf -- "$dir" 2>/dev/null
	[ -e "$dir" ] && sleep 0.1
	i=$((i+1))
done
exit 0
`

// startReaper starts the cleanup watchdog described at reaperScript. It runs
// as ourselves (root may signal the postgres-owned postmaster and delete its
// files) in its own process group, so a signal sent to our group (go test's
// timeout, Ctrl-C) does not take it down along with us.
func (s *Server) startReaper() error {
	r, w, err := os.Pipe() // both ends close-on-exec: no other child inherits w
	if err != nil {
		return fmt.Errorf("pgtemp: reaper pipe: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", reaperScript, "pgtemp-reaper", s.dir, s.dataDir)
	cmd.Stdin = r
	// Stdout/stderr stay /dev/null: a pipe to our (dead) stdout would
	// SIGPIPE or block the reaper.
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return fmt.Errorf("pgtemp: start reaper: %w", err)
	}
	s.reaper = cmd
	s.reaperW = w
	s.reaperDone = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.reaperDone)
	}()
	return nil
}

// serverSettings returns the -c arguments: fast, non-durable defaults for a
// throwaway server, then the caller's settings in a stable order.
func serverSettings(extra map[string]string) []string {
	defaults := [][2]string{
		{"listen_addresses", host},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"max_connections", "300"},
		{"shared_buffers", "64MB"},
		{"password_encryption", "scram-sha-256"},
	}
	var args []string
	for _, kv := range defaults {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+extra[k])
	}
	return args
}

// childEnv is our environment minus libpq/server variables (PGDATA, PGPORT,
// PGHOST...) that would steer initdb or postgres elsewhere, with a C locale
// and a HOME the server user can reach.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") && !strings.HasPrefix(name, "PGCOORD_") {
			continue
		}
		switch name {
		case "HOME", "LANG", "LANGUAGE", "LC_ALL":
			continue
		}
		if strings.HasPrefix(name, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "LANG=C", "LC_ALL=C")
}

// serverCredential returns the user to run PostgreSQL as: nil (ourselves)
// unless we are root, which postgres refuses to run as; then the "postgres"
// OS user that the Debian packages create.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtemp: running as root, which PostgreSQL refuses, and there is no OS user \"postgres\" to run it as (install postgresql-15, which creates it, or `useradd --system postgres`): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtemp: OS user postgres has non-numeric uid %q / gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// makeTempRoot creates DIR, DIR/data and DIR/sock, owned by the server user.
func makeTempRoot(cred *syscall.Credential) (string, error) {
	base := filepath.Clean(os.TempDir())
	// The server user must be able to traverse every parent of the data dir
	// (root's TMPDIR may be under /root), and the Unix socket path must fit
	// in sun_path (~107 bytes).
	if (cred != nil && !traversableByAll(base)) || len(base) > 60 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgcoord-pg-*")
	if err != nil {
		return "", fmt.Errorf("pgtemp: create temp dir: %w", err)
	}
	dir = filepath.Clean(dir)
	for _, d := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "sock")} {
		// initdb insists on a 0700 (or 0750) data dir owned by the server user.
		if d != dir {
			if err := os.Mkdir(d, 0o700); err != nil {
				_ = os.RemoveAll(dir)
				return "", fmt.Errorf("pgtemp: %w", err)
			}
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				_ = os.RemoveAll(dir)
				return "", fmt.Errorf("pgtemp: chown %s to postgres: %w", d, err)
			}
		}
	}
	return dir, nil
}

// traversableByAll reports whether every directory from p up to / has the
// "other" execute bit, so an unrelated user can reach p.
func traversableByAll(p string) bool {
	p, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(p)
		if parent == p {
			return true
		}
		p = parent
	}
}

// findBinDir picks the directory holding initdb and postgres, in the order
// documented on Options.BinDir.
func findBinDir(explicit string) (string, error) {
	const advice = "install postgresql-15 (apt-get install postgresql-15) or set " + BinDirEnv + " to the directory holding initdb and postgres"
	if explicit != "" {
		if hasServerBinaries(explicit) {
			return explicit, nil
		}
		return "", fmt.Errorf("%w in Options.BinDir %s: %s", ErrNoBinaries, explicit, advice)
	}
	if d := os.Getenv(BinDirEnv); d != "" {
		if hasServerBinaries(d) {
			return d, nil
		}
		return "", fmt.Errorf("%w in $%s=%s: %s", ErrNoBinaries, BinDirEnv, d, advice)
	}
	tried := []string{"/usr/lib/postgresql/*/bin"}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	for _, d := range dirs {
		if hasServerBinaries(d) {
			return d, nil
		}
	}
	tried = append(tried, "pg_config --bindir")
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			if d := strings.TrimSpace(string(out)); d != "" && hasServerBinaries(d) {
				return d, nil
			}
		}
	}
	tried = append(tried, "PATH")
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(initdb); hasServerBinaries(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w (looked in %s): %s", ErrNoBinaries, strings.Join(tried, ", "), advice)
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionLess compares dotted versions numerically ("9.6" < "15"), falling
// back to string order for anything else.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if errX != nil || errY != nil {
			if as[i] != bs[i] {
				return as[i] < bs[i]
			}
			continue
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process may
// take it before postgres binds it; Start retries with a new one then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pgtemp: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailLines returns the last n lines of s, for compact error messages.
func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
