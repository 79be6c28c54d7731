// Package hastack starts a real highly available PostgreSQL stack for
// pgcoord's HA tests (`make ha`): a one-member etcd, two or three
// PostgreSQL 15 nodes under Patroni, and HAProxy routing to whichever node
// Patroni's REST API calls the primary, all on loopback ports in one
// temporary directory, and removes it all afterwards.
//
// Every process of a stack has the stack's directory in its command line,
// and a small reaper shell process, watching the owner through a pipe,
// kills them all and deletes the directory when the owner goes away, even
// on SIGKILL or a test's os.Exit (as internal/pgtemp does for one server).
//
// PostgreSQL refuses to run as root, so Patroni runs as the OS user
// postgres (it starts postgres itself); etcd and HAProxy run as ourselves.
// Each node reaches etcd through a gate of its own, a loopback TCP
// forwarder that CutEtcd closes: the partition of a leader from the DCS
// without iptables. The binaries come from Debian's etcd-server 3.4,
// patroni 3.0 and haproxy 2.6 (scripts/install-ha.sh).
package hastack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// host is the only address anything of a stack listens on.
const host = "127.0.0.1"

// startTimeout bounds Start from the first Patroni to HAProxy routing.
const startTimeout = 6 * time.Minute

// ErrMissing is wrapped by Start's error when a binary of the stack is not
// installed.
var ErrMissing = errors.New("hastack: binaries missing: run scripts/install-ha.sh (etcd-server, patroni, haproxy, postgresql-15)")

// Options tune Start; the zero value is a two-node stack with Patroni ttl
// 10s and loop_wait 1s.
type Options struct {
	// Nodes is how many Patroni nodes run. Default 2; at most 5.
	Nodes int
	// TTL is Patroni's ttl: how long the leader key lives in etcd unless
	// the leader renews it, so how long after a leader's death another
	// node may take over. Default 10s (Patroni's own default is 30s).
	TTL time.Duration
	// LoopWait is Patroni's loop_wait, the pause between two runs of its
	// HA loop. Default 1s (Patroni's: 10s).
	LoopWait time.Duration
	// RetryTimeout is Patroni's retry_timeout: how long a leader retries
	// etcd (and PostgreSQL) before it demotes itself. Default: the
	// largest whole second with LoopWait + 2×RetryTimeout <= TTL, at
	// most 10s (Patroni's default), so 4s under the default TTL.
	RetryTimeout time.Duration
	// MaximumLagOnFailover is Patroni's maximum_lag_on_failover in
	// bytes: a replica further behind never promotes. Default 1 MiB
	// (Patroni's default).
	MaximumLagOnFailover int64
	// SynchronousMode sets Patroni's synchronous_mode. Default false.
	SynchronousMode bool
	// CheckInterval is HAProxy's health-check interval (inter) against
	// each node's REST /primary; a node is down after two failed checks
	// and up after one good one. Default 250ms.
	CheckInterval time.Duration
	// BinDir is where the PostgreSQL server binaries live. Default
	// /usr/lib/postgresql/15/bin.
	BinDir string
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

func (o *Options) fill() error {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 5 {
		return fmt.Errorf("hastack: Nodes %d: want 1 to 5", o.Nodes)
	}
	if o.TTL == 0 {
		o.TTL = 10 * time.Second
	}
	if o.LoopWait == 0 {
		o.LoopWait = time.Second
	}
	if o.RetryTimeout == 0 {
		o.RetryTimeout = min(10*time.Second, ((o.TTL - o.LoopWait) / 2).Truncate(time.Second))
	}
	if o.LoopWait+2*o.RetryTimeout > o.TTL || o.RetryTimeout < time.Second {
		return fmt.Errorf("hastack: Patroni wants loop_wait + 2 × retry_timeout <= ttl (%v + 2 × %v > %v)", o.LoopWait, o.RetryTimeout, o.TTL)
	}
	if o.MaximumLagOnFailover == 0 {
		o.MaximumLagOnFailover = 1 << 20
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = 250 * time.Millisecond
	}
	if o.BinDir == "" {
		o.BinDir = "/usr/lib/postgresql/15/bin"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Stack is a running etcd, Patroni cluster and HAProxy. Its methods are
// safe for concurrent use.
type Stack struct {
	opts  Options
	dir   string
	cred  *syscall.Credential
	nodes []*Node

	etcd       *proc
	etcdURL    string // http://127.0.0.1:port
	haproxy    *proc
	haPort     int
	reaper     *proc
	reaperW    *os.File
	closeOnce  sync.Once
	closeErr   error
	etcdConfig string // a patronictl config that reaches etcd directly
}

// Start starts etcd, the Patroni nodes (one bootstraps the cluster with
// initdb, the others clone it with pg_basebackup) and HAProxy, and returns
// once there is a leader, every other node streams from it, and HAProxy
// routes to the leader. Close undoes it all.
func Start(opts Options) (st *Stack, err error) {
	began := time.Now()
	if err := opts.fill(); err != nil {
		return nil, err
	}
	for _, bin := range []string{"etcd", "patroni", "patronictl", "haproxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: no %s in PATH", ErrMissing, bin)
		}
	}
	if _, err := os.Stat(filepath.Join(opts.BinDir, "postgres")); err != nil {
		return nil, fmt.Errorf("%w: no postgres in %s", ErrMissing, opts.BinDir)
	}
	cred, err := postgresUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("/tmp", "pgcoord-ha-*")
	if err != nil {
		return nil, fmt.Errorf("hastack: %w", err)
	}
	// The postgres user must reach its node directories.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("hastack: %w", err)
	}
	s := &Stack{opts: opts, dir: dir, cred: cred}
	s.reaper, s.reaperW, err = startReaper(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if err := s.startEtcd(); err != nil {
		return nil, err
	}
	for i := range opts.Nodes {
		n, err := s.newNode(i + 1)
		if err != nil {
			return nil, err
		}
		s.nodes = append(s.nodes, n)
	}
	if err := s.writeCtlConfig(); err != nil {
		return nil, err
	}
	// The first node bootstraps alone, so that the others clone a
	// cluster rather than race for the initialize key.
	if err := s.nodes[0].StartPatroni(); err != nil {
		return nil, err
	}
	// Bootstrapping and cloning take seconds on an idle machine and
	// minutes on a loaded one (pg_basebackup, Patroni's loops).
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := s.WaitLeader(ctx, nil); err != nil {
		return nil, err
	}
	for _, n := range s.nodes[1:] {
		if err := n.StartPatroni(); err != nil {
			return nil, err
		}
	}
	if err := s.WaitReplicas(ctx); err != nil {
		return nil, err
	}
	if err := s.startHAProxy(); err != nil {
		return nil, err
	}
	if err := s.waitHAProxy(ctx); err != nil {
		return nil, err
	}
	opts.Logf("hastack: %d nodes under Patroni (ttl %v, loop_wait %v, retry_timeout %v), etcd %s, HAProxy on port %d, in %s (%s)",
		len(s.nodes), opts.TTL, opts.LoopWait, opts.RetryTimeout, s.etcdURL, s.haPort, dir, time.Since(began).Round(time.Millisecond))
	return s, nil
}

// Dir is the stack's temporary directory (logs of every process in it).
func (s *Stack) Dir() string { return s.dir }

// Options are the stack's options, defaults filled in.
func (s *Stack) Options() Options { return s.opts }

// Nodes are the Patroni nodes, node1 first.
func (s *Stack) Nodes() []*Node { return append([]*Node(nil), s.nodes...) }

// Node returns the node named name, nil if there is none.
func (s *Stack) Node(name string) *Node {
	for _, n := range s.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// HAProxyURL is a superuser URL through HAProxy, which routes to the leader.
func (s *Stack) HAProxyURL() string {
	return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable", host, s.haPort)
}

// HAProxyPort is HAProxy's listening port.
func (s *Stack) HAProxyPort() int { return s.haPort }

// MultiHostURL is a superuser URL listing every node, node1 first (or in
// the order of names, when given), with extra appended to its query
// (e.g. "&target_session_attrs=read-write").
func (s *Stack) MultiHostURL(extra string, names ...string) string {
	nodes := s.nodes
	if len(names) > 0 {
		nodes = nil
		for _, name := range names {
			if n := s.Node(name); n != nil {
				nodes = append(nodes, n)
			}
		}
	}
	hosts := make([]string, len(nodes))
	for i, n := range nodes {
		hosts[i] = fmt.Sprintf("%s:%d", host, n.pgPort)
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/postgres?sslmode=disable" + extra
}

// Close kills every process of the stack and removes its directory.
// Idempotent.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		s.haproxy.kill()
		for _, n := range s.nodes {
			if err := n.Kill(); err != nil {
				errs = append(errs, err)
			}
			if err := n.gate.close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.etcd.kill()
		// Anything left (a postmaster Patroni started while we killed
		// it) goes the same way.
		if err := killAll(pidsUnder(s.dir), 10*time.Second); err != nil {
			errs = append(errs, err)
		}
		if dst, err := s.keepLogs(); err != nil {
			errs = append(errs, err)
		} else if dst != "" {
			s.opts.Logf("hastack: the stack's logs are kept in %s", dst)
		}
		_ = s.reaperW.Close()
		select {
		case <-s.reaper.done:
		case <-time.After(30 * time.Second):
			s.reaper.kill()
			errs = append(errs, errors.New("hastack: the reaper did not finish within 30s"))
		}
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// env is the environment of a process of the stack: ours, without libpq
// variables and locale, with HOME set to home.
func (s *Stack) env(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") || strings.HasPrefix(name, "LC_") || strings.HasPrefix(name, "PATRONI") ||
			name == "HOME" || name == "LANG" || name == "PATH" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "LANG=C.UTF-8", "LC_ALL=C.UTF-8",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

// haproxyConfig routes the one listener to whichever node answers 200 on
// Patroni's REST /primary, as Patroni's documentation sets HAProxy up, with
// a check every CheckInterval (instead of the usual 3s), a node down after
// two failed checks and up after one good one, and the sessions to a node
// marked down shut down at once. Its stats socket (HAProxyStatus) is
// haproxy.sock in the stack's directory.
const haproxyConfig = `# Written by pgcoord's internal/hastack.
global
    maxconn 2000
    stats socket %s mode 600 level user

defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s

listen primary
    bind 127.0.0.1:%d
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    default-server inter %dms fall 2 rise 1 on-marked-down shutdown-sessions
%s`

// postgresUser is the OS user Patroni (and so PostgreSQL) runs as: nil
// when we are not root, else postgres.
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("hastack: running as root, and there is no OS user postgres to run Patroni as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("hastack: OS user postgres has uid %q, gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		return 0, fmt.Errorf("hastack: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailFile returns the last n lines of a log file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
