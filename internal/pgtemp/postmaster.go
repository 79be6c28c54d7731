package pgtemp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// postmaster is one run of the server process.
type postmaster struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
}

var (
	errClosed    = errors.New("pgtemp: server is closed")
	errPortInUse = errors.New("pgtemp: port already in use")
	// errOldChildren means children of a killed postmaster still hold its
	// shared memory; they notice the death and exit within moments.
	errOldChildren = errors.New("pgtemp: processes of the previous postmaster are still running")
)

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
