package hastack

// Reading and steering the Patroni cluster: members, leader, replicas,
// switchover, patronictl.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Member is one row of Patroni's cluster view (REST GET /cluster).
type Member struct {
	Name     string `json:"name"`
	Role     string `json:"role"`  // "leader", "replica", "sync_standby"
	State    string `json:"state"` // "running", "streaming", "stopped", ...
	Timeline int    `json:"timeline"`
	Lag      any    `json:"lag"` // bytes, or "unknown"
}

// Cluster asks the REST API of each node in turn (the first that answers)
// for the cluster as Patroni sees it.
func (s *Stack) Cluster(ctx context.Context) ([]Member, error) {
	var errs []error
	for _, n := range s.nodes {
		var body struct {
			Members []Member `json:"members"`
		}
		code, err := n.rest(ctx, "/cluster", &body)
		if err == nil && code == http.StatusOK {
			return body.Members, nil
		}
		errs = append(errs, fmt.Errorf("%s: %d %v", n.name, code, err))
	}
	return nil, fmt.Errorf("hastack: no node answers /cluster: %w", errors.Join(errs...))
}

// Leader is the node Patroni calls the leader now, and running; nil when
// there is none.
func (s *Stack) Leader(ctx context.Context) (*Node, error) {
	ms, err := s.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Role == "leader" && m.State == "running" {
			return s.Node(m.Name), nil
		}
	}
	return nil, nil
}

// WaitLeader waits until a node other than not is the running leader and
// answers 200 on /primary, and returns it.
func (s *Stack) WaitLeader(ctx context.Context, not *Node) (*Node, error) {
	var last error
	for {
		n, err := s.Leader(ctx)
		if err == nil && n != nil && n != not {
			if code, err := n.rest(ctx, "/primary", nil); err == nil && code == http.StatusOK {
				return n, nil
			}
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("hastack: no new leader: %w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitReplicas waits until every node but the leader answers 200 on
// /replica (a running replica) and the leader streams to all of them.
// /replica alone is not enough: a node restarted after it diverged (the
// patroni-killed case) answers 200 for a moment as a standby before its
// Patroni finds the timelines differ and stops it to run pg_rewind (make
// ha failed so: WaitReplicas returned, then Role said "unknown"); a node
// that must still be rewound cannot stream from the leader.
func (s *Stack) WaitReplicas(ctx context.Context) error {
	for {
		leader, err := s.Leader(ctx)
		ok := err == nil && leader != nil
		if ok {
			for _, n := range s.nodes {
				if n == leader {
					continue
				}
				if code, err := n.rest(ctx, "/replica", nil); err != nil || code != http.StatusOK {
					ok = false
					break
				}
			}
		}
		if ok {
			streaming, err := streamingAt(ctx, fmt.Sprintf("%s:%d", host, leader.pgPort))
			ok = err == nil && streaming >= len(s.nodes)-1
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			ms, _ := s.Cluster(context.Background())
			return fmt.Errorf("hastack: replicas not streaming: %w (cluster: %+v)", ctx.Err(), ms)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Switchover runs `patronictl switchover --force` from the current leader
// to candidate (any replica when nil). It returns when patronictl does, once
// the candidate leads.
func (s *Stack) Switchover(ctx context.Context, leader, candidate *Node) error {
	args := []string{"-c", s.etcdConfig, "switchover", "--force", "--leader", leader.name}
	if candidate != nil {
		args = append(args, "--candidate", candidate.name)
	}
	out, err := s.patronictl(ctx, args...)
	if err != nil {
		return fmt.Errorf("hastack: patronictl switchover: %w\n%s", err, out)
	}
	if !strings.Contains(out, "Successfully switched over") {
		return fmt.Errorf("hastack: patronictl switchover did not switch over:\n%s", out)
	}
	return nil
}

// Patronictl runs patronictl with a config that reaches etcd directly,
// as the postgres user, and returns its combined output.
func (s *Stack) Patronictl(ctx context.Context, args ...string) (string, error) {
	return s.patronictl(ctx, append([]string{"-c", s.etcdConfig}, args...)...)
}

func (s *Stack) patronictl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "patronictl", args...)
	cmd.Dir = s.dir
	cmd.Env = s.env(s.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// writeCtlConfig writes the config patronictl uses: the cluster's scope and
// etcd itself, not a node's gate, so it works while a node is cut off.
func (s *Stack) writeCtlConfig() error {
	s.etcdConfig = filepath.Join(s.dir, "patronictl.yml")
	cfg := fmt.Sprintf("scope: %s\nnamespace: %s\netcd3:\n  hosts: %s\n", scope, namespace, strings.TrimPrefix(s.etcdURL, "http://"))
	if err := os.WriteFile(s.etcdConfig, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("hastack: %w", err)
	}
	return nil
}
