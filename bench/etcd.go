package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdOption tunes the embedded etcd server.
type etcdOption func(*embed.Config)

// withoutFsync turns off etcd's fsyncs (--unsafe-no-fsync), for a row that
// shows how much of etcd's cost is the disk: pgcoord's advisory locks write
// nothing to disk at all.
func withoutFsync(cfg *embed.Config) { cfg.UnsafeNoFsync = true }

// serveEtcd runs a single-member etcd in dir, on free loopback ports, with
// its logs discarded, until the parent closes our stdin. It is the etcd
// child's main; the ready line carries the client URL.
func serveEtcd(dir string, opts ...etcdOption) error {
	clientURL, err := freeURL()
	if err != nil {
		return err
	}
	peerURL, err := freeURL()
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = "bench"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	for _, o := range opts {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return err
	case <-time.After(readyTimeout):
		return fmt.Errorf("etcd not ready within %s", readyTimeout)
	}
	ready(clientURL.String())
	return nil
}

// freeURL returns an http URL on a loopback port that was free a moment ago.
func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}

// etcdServer is an etcd child process and its data directory.
type etcdServer struct {
	child    *child
	dir      string
	endpoint string
}

// startEtcd starts an etcd child in a new temporary directory; mode is
// "etcd" or "etcd-nofsync".
func startEtcd(ctx context.Context, mode string) (*etcdServer, error) {
	dir, err := os.MkdirTemp("", "pgcoord-bench-etcd-*")
	if err != nil {
		return nil, err
	}
	c, endpoint, err := startChild(ctx, mode, childArgEnv+"="+dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &etcdServer{child: c, dir: dir, endpoint: endpoint}, nil
}

// close stops the server and removes its data.
func (s *etcdServer) close() {
	s.child.stop()
	_ = os.RemoveAll(s.dir)
}

// etcdUncontended loops Lock and Unlock of one concurrency.Mutex, in one
// session (one lease), from one goroutine: what an etcd user writes.
func etcdUncontended(endpoint func(*bench) string) scenarioFunc {
	return func(ctx context.Context, b *bench) (sample, error) {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{endpoint(b)},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return sample{}, err
		}
		defer cli.Close()
		session, err := concurrency.NewSession(cli)
		if err != nil {
			return sample{}, err
		}
		defer session.Close()
		m := concurrency.NewMutex(session, "/pgcoord-bench/uncontended")
		return loop(ctx, b.duration, func(ctx context.Context) error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(ctx)
		})
	}
}
