package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server process started for the run.
type redisServer struct {
	cmd     *exec.Cmd
	addr    string
	version string
	stderr  bytes.Buffer
	done    chan struct{} // closed once the process has been reaped
}

// startRedis runs the machine's redis-server on a free loopback port with
// persistence off (--save "" --appendonly no): a lock service has nothing
// worth saving, and the snapshots would only add noise.
func startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found: run scripts/install-redis.sh (Debian: apt-get install redis-server), or leave the redsync row out with -only")
	}
	u, err := freeURL()
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(u.Host, ":")
	s := &redisServer{addr: u.Host, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	s.cmd.Dir = "/"
	s.cmd.Stderr = &s.stderr
	s.cmd.Stdout = &s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	var werr error
	go func() {
		werr = s.cmd.Wait()
		close(s.done)
	}()

	cli := redis.NewClient(&redis.Options{Addr: s.addr})
	defer cli.Close()
	deadline := time.Now().Add(readyTimeout)
	for {
		info, err := cli.Info(ctx, "server").Result()
		if err == nil {
			s.version = infoField(info, "redis_version")
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server exited (%v): %s", werr, strings.TrimSpace(s.stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.close()
			return nil, fmt.Errorf("redis-server not ready within %s: %w", readyTimeout, err)
		}
	}
}

// infoField returns one "key:value" field of Redis's INFO output.
func infoField(info, key string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return "?"
}

// close stops the server.
func (s *redisServer) close() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// redsyncUncontended loops Lock and Unlock of one redsync mutex over a
// go-redis v9 pool, with redsync's defaults: what a Redis user writes.
func redsyncUncontended(ctx context.Context, b *bench) (sample, error) {
	cli := redis.NewClient(&redis.Options{Addr: b.redis.addr})
	defer cli.Close()
	rs := redsync.New(goredis.NewPool(cli))
	m := rs.NewMutex("pgcoord-bench-uncontended")
	return loop(ctx, b.duration, func(ctx context.Context) error {
		if err := m.LockContext(ctx); err != nil {
			return err
		}
		ok, err := m.UnlockContext(ctx)
		if err == nil && !ok {
			err = errNotHeld
		}
		return err
	})
}
