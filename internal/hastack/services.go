package hastack

// The stack's two services besides the Patroni nodes: etcd, the DCS the
// nodes elect their leader through, and HAProxy, routing to the leader by
// Patroni's REST /primary check.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func (s *Stack) startEtcd() error {
	client, err := freePort()
	if err != nil {
		return err
	}
	peer, err := freePort()
	if err != nil {
		return err
	}
	s.etcdURL = fmt.Sprintf("http://%s:%d", host, client)
	peerURL := fmt.Sprintf("http://%s:%d", host, peer)
	data := filepath.Join(s.dir, "etcd")
	s.etcd, err = spawn("etcd", s.dir, filepath.Join(s.dir, "etcd.log"), s.env(s.dir), nil, "etcd",
		"--name", "etcd1",
		"--data-dir", data,
		"--listen-client-urls", s.etcdURL, "--advertise-client-urls", s.etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "etcd1="+peerURL,
		"--initial-cluster-state", "new",
		"--logger", "zap", "--log-outputs", "stderr",
	)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if healthy(s.etcdURL + "/health") {
			return nil
		}
		if s.etcd.exited() || time.Now().After(deadline) {
			return fmt.Errorf("hastack: etcd not healthy at %s; log:\n%s", s.etcdURL, tailFile(filepath.Join(s.dir, "etcd.log"), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func healthy(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := restClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Health string `json:"health"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&body) == nil && body.Health == "true"
}

func (s *Stack) startHAProxy() error {
	var err error
	if s.haPort, err = freePort(); err != nil {
		return err
	}
	var servers strings.Builder
	for _, n := range s.nodes {
		fmt.Fprintf(&servers, "    server %s %s:%d check port %d\n", n.name, host, n.pgPort, n.restPort)
	}
	path := filepath.Join(s.dir, "haproxy.cfg")
	cfg := fmt.Sprintf(haproxyConfig, s.haproxySocket(), s.haPort, s.opts.CheckInterval.Milliseconds(), servers.String())
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("hastack: %w", err)
	}
	// -db: stay in the foreground, so that the process we wait for is
	// HAProxy itself.
	s.haproxy, err = spawn("haproxy", s.dir, filepath.Join(s.dir, "haproxy.log"), s.env(s.dir), nil, "haproxy", "-db", "-f", path)
	return err
}

// waitHAProxy waits until HAProxy routes to the leader alone. HAProxy 2.6
// starts with every server up, and marks one down only after fall (2)
// failed checks: until then it sends connections to the replica too
// (round robin), and one connection that reaches the leader proves
// nothing (make ha's first run on a quiet machine migrated through HAProxy
// onto the replica: "is a hot standby"). So it waits for the checks to
// have run fall + 1 times, then for as many connections in a row as there
// are nodes, twice over, each reaching a primary.
func (s *Stack) waitHAProxy(ctx context.Context) error {
	addr := net.JoinHostPort(host, strconv.Itoa(s.haPort))
	checked := time.Now().Add(3 * s.opts.CheckInterval)
	inRow := 0
	for {
		if s.haproxy.exited() {
			return fmt.Errorf("hastack: haproxy exited; log:\n%s", tailFile(filepath.Join(s.dir, "haproxy.log"), 30))
		}
		if ok, _ := isPrimaryAt(ctx, addr); ok && time.Now().After(checked) {
			inRow++
		} else {
			inRow = 0
		}
		if inRow >= 2*len(s.nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hastack: HAProxy on %s does not route to a primary: %w; log:\n%s", addr, ctx.Err(), tailFile(filepath.Join(s.dir, "haproxy.log"), 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Stack) haproxySocket() string { return filepath.Join(s.dir, "haproxy.sock") }

// HAProxyStatus is HAProxy's view of the nodes, as its stats socket's
// "show stat" reports it: each node's server status in the listener
// ("UP", "DOWN", "UP 1/2" while failing checks, "DOWN 1/1" while passing
// them...), by node name. HAProxy routes new connections to the nodes UP.
func (s *Stack) HAProxyStatus(ctx context.Context) (map[string]string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.haproxySocket())
	if err != nil {
		return nil, fmt.Errorf("hastack: HAProxy stats socket: %w", err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("show stat\n")); err != nil {
		return nil, fmt.Errorf("hastack: HAProxy stats socket: %w", err)
	}
	// HAProxy answers and closes the connection (not interactive).
	out, err := io.ReadAll(conn)
	if err != nil {
		return nil, fmt.Errorf("hastack: HAProxy stats socket: %w", err)
	}
	return parseStat(string(out), "primary")
}

// parseStat reads the status of proxy's servers from "show stat" CSV: a
// header line "# pxname,svname,...", then a line per proxy and server
// (FRONTEND and BACKEND are the proxy's own lines).
func parseStat(csv, proxy string) (map[string]string, error) {
	lines := strings.Split(strings.TrimSpace(csv), "\n")
	header, ok := strings.CutPrefix(lines[0], "# ")
	if !ok {
		return nil, fmt.Errorf("hastack: HAProxy stats: no CSV header in %q", lines[0])
	}
	col := map[string]int{}
	for i, name := range strings.Split(header, ",") {
		col[name] = i
	}
	px, sv, st := col["pxname"], col["svname"], col["status"]
	if st == 0 {
		return nil, fmt.Errorf("hastack: HAProxy stats: no status column in %q", header)
	}
	servers := map[string]string{}
	for _, line := range lines[1:] {
		f := strings.Split(line, ",")
		if len(f) <= st || f[px] != proxy || f[sv] == "FRONTEND" || f[sv] == "BACKEND" {
			continue
		}
		servers[f[sv]] = f[st]
	}
	return servers, nil
}
