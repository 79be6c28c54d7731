package hastack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	scope     = "pgcoord-ha"
	namespace = "/pgcoord/"
)

// Node is one PostgreSQL server under a Patroni of its own.
type Node struct {
	st       *Stack
	name     string
	dir      string
	dataDir  string
	config   string
	pgPort   int
	restPort int
	gate     *gate // its way to etcd

	mu      sync.Mutex
	patroni *proc // nil while it does not run
}

// Name is the node's Patroni name (node1, node2, ...).
func (n *Node) Name() string { return n.name }

// Port is the node's PostgreSQL port.
func (n *Node) Port() int { return n.pgPort }

// RESTPort is the port of the node's Patroni REST API.
func (n *Node) RESTPort() int { return n.restPort }

// URL is a superuser URL straight to the node's PostgreSQL.
func (n *Node) URL() string {
	return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable", host, n.pgPort)
}

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return n.dataDir }

// PatroniLog is the tail of the node's Patroni log (Patroni's own lines;
// PostgreSQL logs under the data directory).
func (n *Node) PatroniLog(lines int) string {
	return tailFile(filepath.Join(n.dir, "patroni.log"), lines)
}

// patroniConfig is a node's patroni.yml. Every server setting is for a
// throwaway cluster on one machine (fsync off: a process killed -9 loses
// nothing that reached the kernel), except full_page_writes and
// wal_log_hints, which pg_rewind needs.
const patroniConfig = `# Written by pgcoord's internal/hastack.
scope: %[1]s
namespace: %[2]s
name: %[3]s
log:
  level: INFO
restapi:
  listen: 127.0.0.1:%[4]d
  connect_address: 127.0.0.1:%[4]d
etcd3:
  hosts: %[5]s
  use_proxies: true
bootstrap:
  dcs:
    ttl: %[6]d
    loop_wait: %[7]d
    retry_timeout: %[8]d
    maximum_lag_on_failover: %[9]d
    synchronous_mode: %[10]t
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        full_page_writes: "on"
        fsync: "off"
        max_connections: 300
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        shared_buffers: 32MB
        wal_retrieve_retry_interval: 100ms
  initdb:
  - encoding: UTF8
  - locale: C
  - no-sync
  pg_hba:
  - local all all trust
  - local replication all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:%[11]d
  connect_address: 127.0.0.1:%[11]d
  data_dir: %[12]s
  bin_dir: %[13]s
  pgpass: %[14]s/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: %[14]s
watchdog:
  mode: "off"
`

func (s *Stack) newNode(i int) (*Node, error) {
	n := &Node{st: s, name: "node" + strconv.Itoa(i), dir: filepath.Join(s.dir, "node"+strconv.Itoa(i))}
	n.dataDir = filepath.Join(n.dir, "data")
	n.config = filepath.Join(n.dir, "patroni.yml")
	var err error
	if n.pgPort, err = freePort(); err != nil {
		return nil, err
	}
	if n.restPort, err = freePort(); err != nil {
		return nil, err
	}
	if err := os.Mkdir(n.dir, 0o700); err != nil {
		return nil, fmt.Errorf("hastack: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(n.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, fmt.Errorf("hastack: %w", err)
		}
	}
	if n.gate, err = newGate(s.etcdURL[len("http://"):]); err != nil {
		return nil, err
	}
	o := s.opts
	cfg := fmt.Sprintf(patroniConfig, scope, namespace, n.name, n.restPort, n.gate.addr(),
		int(o.TTL/time.Second), int(o.LoopWait/time.Second), int(o.RetryTimeout/time.Second),
		o.MaximumLagOnFailover, o.SynchronousMode,
		n.pgPort, n.dataDir, o.BinDir, n.dir)
	if err := os.WriteFile(n.config, []byte(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("hastack: %w", err)
	}
	return n, nil
}

// StartPatroni starts the node's Patroni, which starts its PostgreSQL: as
// the bootstrapping leader on an empty cluster, as a clone of the leader
// (pg_basebackup) on a new node, or, on a node that was the leader before
// it died, as a replica of the new leader, rewound with pg_rewind first
// when its history diverged. It does not wait: see Stack.WaitReplicas.
func (n *Node) StartPatroni() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.patroni != nil && !n.patroni.exited() {
		return nil
	}
	p, err := spawn("patroni "+n.name, n.dir, filepath.Join(n.dir, "patroni.log"), n.st.env(n.dir), n.st.cred, "patroni", n.config)
	if err != nil {
		return err
	}
	n.patroni = p
	return nil
}

// Kill kills the node as a crash would: its Patroni, its postmaster and
// every backend SIGKILLed at once. Open connections to it end (the kernel
// closes them; a machine that vanished would leave them hanging instead).
// Killing a dead node is a no-op.
func (n *Node) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var pids []int
	if n.patroni != nil {
		pids = append(pids, n.patroni.cmd.Process.Pid)
	}
	if pm := postmasterPID(n.dataDir); pm != 0 {
		pids = append(append(pids, pm), childrenOf(pm)...)
	}
	err := killAll(pids, 10*time.Second)
	if n.patroni != nil {
		n.patroni.kill() // reaps it
		n.patroni = nil
	}
	return err
}

// KillPatroni SIGKILLs the node's Patroni only. Its PostgreSQL runs on,
// as a primary if it was the leader: without a watchdog nothing fences it,
// and once the leader key expires another node is promoted beside it.
func (n *Node) KillPatroni() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.patroni.kill()
	n.patroni = nil
}

// StopPostgres stops the node's PostgreSQL at once (SIGQUIT to the
// postmaster, immediate shutdown), for cleaning up after KillPatroni.
func (n *Node) StopPostgres() error {
	pm := postmasterPID(n.dataDir)
	if pm == 0 {
		return nil
	}
	return killAll(append([]int{pm}, childrenOf(pm)...), 10*time.Second)
}

// CutEtcd partitions the node from etcd (cut true) or heals the partition:
// its Patroni can neither read nor renew the leader key; PostgreSQL and the
// REST API stay reachable.
func (n *Node) CutEtcd(cut bool) { n.gate.setCut(cut) }

// Role asks the node's REST API for its role: "primary", "replica" or
// "unknown" (no answer, or neither).
func (n *Node) Role(ctx context.Context) string {
	if code, err := n.rest(ctx, "/primary", nil); err == nil && code == http.StatusOK {
		return "primary"
	}
	if code, err := n.rest(ctx, "/replica", nil); err == nil && code == http.StatusOK {
		return "replica"
	}
	return "unknown"
}

// IsPrimary connects straight to the node's PostgreSQL and reports whether
// it accepts writes (not in recovery).
func (n *Node) IsPrimary(ctx context.Context) (bool, error) {
	return isPrimaryAt(ctx, fmt.Sprintf("%s:%d", host, n.pgPort))
}

// rest GETs path from the node's REST API and decodes a JSON body into out
// when out is not nil.
func (n *Node) rest(ctx context.Context, path string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", host, n.restPort, path), nil)
	if err != nil {
		return 0, err
	}
	resp, err := restClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

// isPrimaryAt connects to host:port as postgres and reports whether the
// server is out of recovery.
func isPrimaryAt(ctx context.Context, addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/postgres?sslmode=disable&connect_timeout=1")
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		return false, err
	}
	return !inRecovery, nil
}

// streamingAt connects to host:port as postgres and counts the standbys
// streaming from it.
func streamingAt(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/postgres?sslmode=disable&connect_timeout=1")
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'`).Scan(&n); err != nil {
		return 0, err
	}
	return n, nil
}

// restClient keeps no idle connections: goleak in the tests that use a
// stack must find no transport goroutines left.
var restClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
