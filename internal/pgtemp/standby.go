package pgtemp

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// StartStandby starts an asynchronous streaming standby of primary, as a
// Patroni replica or an RDS Multi-AZ standby is one: a base backup of the
// primary taken with pg_basebackup -R (which writes standby.signal and
// primary_conninfo), started on a free port in a temporary directory of its
// own, as a hot standby that accepts read-only connections. Replication is
// asynchronous: a commit on the primary does not wait for the standby, so
// StopImmediate on the primary can lose what the standby had not received
// yet, as a real failover can.
//
// opts apply to the standby (BinDir defaults to the primary's). Close the
// standby on its own; closing the primary does not stop it.
func StartStandby(primary *Server, opts Options) (*Server, error) {
	began := time.Now()
	primary.mu.Lock()
	port, closed, running := primary.port, primary.closed, primary.runningLocked()
	primary.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if !running {
		return nil, errors.New("pgtemp: the primary is not running: a standby starts from a base backup of it")
	}
	if opts.BinDir == "" {
		opts.BinDir = primary.binDir
	}
	// Without pg_basebackup (the npm server packages of the version matrix
	// have none) the base backup is a copy under the backup API
	// (copyBaseBackup); pg_ctl is needed either way, to promote.
	if !hasTool(opts.BinDir, "pg_ctl") {
		return nil, fmt.Errorf("%w: no pg_ctl (nor pg_basebackup) in %s: install postgresql-client-15 (which postgresql-15 depends on)", ErrNoBinaries, opts.BinDir)
	}
	// A standby whose primary is gone retries its WAL sources every
	// wal_retrieve_retry_interval (5s by default), and a promotion asked for
	// meanwhile can wait that long: keep failovers in tests quick.
	settings := map[string]string{"wal_retrieve_retry_interval": "100ms"}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	opts.Settings = settings
	s, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	if err := s.baseBackup(primary, port); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.listen(); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.logf("pgtemp: standby of port %d ready at %s (%s)", port, s.urlLocked(), time.Since(began).Round(time.Millisecond))
	return s, nil
}

// baseBackup fills the standby's data directory from the primary on port.
func (s *Server) baseBackup(primary *Server, port int) error {
	if !hasTool(s.binDir, "pg_basebackup") {
		s.logf("pgtemp: base backup of %s:%d into %s by copy (no pg_basebackup in %s)", host, port, s.dataDir, s.binDir)
		return s.copyBaseBackup(primary.URL(), primary.dataDir, port)
	}
	s.logf("pgtemp: pg_basebackup of %s:%d into %s", host, port, s.dataDir)
	cmd := s.command(filepath.Join(s.binDir, "pg_basebackup"),
		"-D", s.dataDir,
		"-h", host, "-p", strconv.Itoa(port), "-U", "postgres",
		"-X", "stream", // the WAL written during the backup comes along
		"-R", // standby.signal and primary_conninfo
		"--checkpoint=fast",
		"--no-sync",
		"--no-manifest",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtemp: pg_basebackup from port %d failed: %w\n%s", port, err, tailLines(string(out), 40))
	}
	return nil
}

// StopImmediate stops the server as `pg_ctl stop -m immediate` does: the
// postmaster and every backend quit at once, with no shutdown checkpoint,
// and WAL that standbys have not received yet is never sent. It is how a
// primary dies in a failover test. StartServer starts it again (after crash
// recovery). Stopping a stopped server is a no-op.
func (s *Server) StopImmediate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	return s.stopLocked(syscall.SIGQUIT)
}

// Promote ends recovery on a standby with `pg_ctl promote` and returns once
// the server accepts writes, on a new timeline.
func (s *Server) Promote() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if !s.runningLocked() {
		return errors.New("pgtemp: promote: the server is not running")
	}
	cmd := s.command(filepath.Join(s.binDir, "pg_ctl"), "promote", "-D", s.dataDir, "-w", "-t", strconv.Itoa(int(readyTimeout/time.Second)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtemp: pg_ctl promote failed: %w\n%s\nserver log:\n%s", err, tailLines(string(out), 10), tailLines(s.logTail(), 40))
	}
	return nil
}

// Pair is a primary and an asynchronous streaming standby of it, for
// failover tests and the chaos suite. Its methods are safe for concurrent
// use.
type Pair struct {
	opts Options

	mu      sync.Mutex
	primary *Server
	standby *Server // nil after a failover, until AddStandby
	retired []*Server
}

// StartPair starts a primary (Start) and a standby of it (StartStandby),
// both with opts.
func StartPair(opts Options) (*Pair, error) {
	primary, err := Start(opts)
	if err != nil {
		return nil, err
	}
	standby, err := StartStandby(primary, opts)
	if err != nil {
		_ = primary.Close()
		return nil, err
	}
	return &Pair{opts: opts, primary: primary, standby: standby}, nil
}

// Primary is the server that accepts writes now.
func (p *Pair) Primary() *Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.primary
}

// Standby is the current standby, nil after a failover until AddStandby.
func (p *Pair) Standby() *Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.standby
}

// Failover stops the primary at once (StopImmediate) and promotes the
// standby, which becomes Primary; the old primary stays down (Close removes
// it) and the pair has no standby until AddStandby. It returns the new
// primary.
func (p *Pair) Failover() (*Server, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.standby == nil {
		return nil, errors.New("pgtemp: failover: no standby (call AddStandby after a failover)")
	}
	if err := p.primary.StopImmediate(); err != nil {
		return nil, err
	}
	if err := p.standby.Promote(); err != nil {
		return nil, err
	}
	p.retired = append(p.retired, p.primary)
	p.primary, p.standby = p.standby, nil
	return p.primary, nil
}

// AddStandby starts a new standby of the current primary, for a next
// failover.
func (p *Pair) AddStandby() (*Server, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.standby != nil {
		return p.standby, nil
	}
	standby, err := StartStandby(p.primary, p.opts)
	if err != nil {
		return nil, err
	}
	p.standby = standby
	return standby, nil
}

// Close stops and removes every server of the pair, old primaries included.
func (p *Pair) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, s := range append([]*Server{p.primary, p.standby}, p.retired...) {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}
