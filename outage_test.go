package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// After an outage of about ten seconds, a caller retrying Acquire gets its
// lock within a second of the server accepting writes again, with the
// default reconnect backoff, which has grown to seconds by then: a caller
// that cannot open a session while the control session reconnects makes
// the reconnect try at once (at most every reconnectKickEvery) instead of
// waiting out the backoff. The server comes back two ways: the same server
// started again (one host), and the standby promoted (a multi-host
// target_session_attrs=read-write string), as Patroni does after its ttl.
func TestFirstAcquireAfterOutage(t *testing.T) {
	t.Parallel()
	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		srv, err := pgtemp.Start(pgtemp.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = srv.Close() })
		require.NoError(t, Migrate(ctx(t), srv.URL()))
		firstAcquireAfterOutage(t, srv.URL(), srv.StopServer, srv.StartServer)
	})
	t.Run("promote", func(t *testing.T) {
		t.Parallel()
		p := haPair(t)
		conn := multiHost("&target_session_attrs=read-write", p.Primary(), p.Standby())
		firstAcquireAfterOutage(t, conn, p.Primary().StopImmediate, func() error {
			_, err := p.Failover()
			return err
		})
	})
}

// outage is how long the server stays unreachable: long enough for the
// default backoff (100ms doubling, ±50% jitter) to grow past a second.
const outage = 10 * time.Second

func firstAcquireAfterOutage(t *testing.T, connString string, stop, start func() error) {
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = connString
		cfg.HeartbeatInterval = 0 // the defaults, backoff included
		cfg.SessionTimeout = 0
		cfg.InitialReconnectBackoff = 0
		cfg.MaxReconnectBackoff = 0
	})
	l := c.GetLock("after-outage")
	mustAcquire(t, l, NoWait) // the name is registered, as a service's are
	require.NoError(t, l.Release(ctx(t)))

	require.NoError(t, stop())
	down := time.Now()
	type result struct {
		at       time.Time
		refusals int
		last     error
	}
	first := make(chan result, 1)
	actx, cancel := context.WithTimeout(context.Background(), outage+time.Minute)
	defer cancel()
	go func() {
		var r result
		for actx.Err() == nil {
			ok, err := l.Acquire(actx, NoWait)
			if ok {
				r.at = time.Now()
				break
			}
			if err == nil {
				err = errors.New("busy")
			}
			r.refusals++
			r.last = err
			time.Sleep(5 * time.Millisecond)
		}
		first <- r
	}()
	time.Sleep(time.Until(down.Add(outage)))
	began := time.Now()
	require.NoError(t, start())
	up := time.Now() // start returns once the server accepts connections (and writes)
	r := <-first
	require.False(t, r.at.IsZero(), "no acquire within a minute of the server's return (%d refused; last: %v)", r.refusals, r.last)
	t.Logf("first acquire %v after the server accepted writes again (%v after it was being started; down %v; %d attempts refused, last: %v)",
		r.at.Sub(up).Round(time.Millisecond), r.at.Sub(began).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond), r.refusals, r.last)
	require.Less(t, r.at.Sub(up), time.Second, "the first acquire comes within a second of the server's return")
	require.NoError(t, l.Release(ctx(t)))
	require.Eventually(t, c.IsActive, 5*time.Second, 10*time.Millisecond)
}
