package pgcoord

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stuckProxy forwards TCP connections to the test server, except that the
// next `stuck` connections it accepts are held unanswered (as HAProxy holds
// a connection while it retries a node that is down), and each forwarded
// connection can wait `delay` before reaching the server (a slow but
// healthy server). It records when the client closed each held connection.
type stuckProxy struct {
	addr   string
	target string
	stuck  atomic.Int32
	delay  atomic.Int64 // nanoseconds
	// stuckUntil holds every connection accepted before it (unix nanos).
	stuckUntil atomic.Int64
	// accepted counts the connections accepted.
	accepted atomic.Int32

	mu sync.Mutex
	// held is when each held connection was accepted, and closed when its
	// client closed it (zero while open).
	held []*heldConn
}

type heldConn struct {
	accepted time.Time
	closed   atomic.Int64 // unix nanos
}

func newStuckProxy(t *testing.T) *stuckProxy {
	t.Helper()
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stuckProxy{addr: ln.Addr().String(), target: u.Host}
	var wg sync.WaitGroup
	var conns sync.Map
	track := func(c net.Conn) { conns.Store(c, true) }
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			track(c)
			if n := p.stuck.Load(); (n > 0 && p.stuck.CompareAndSwap(n, n-1)) || time.Now().UnixNano() < p.stuckUntil.Load() {
				h := &heldConn{accepted: time.Now()}
				p.mu.Lock()
				p.held = append(p.held, h)
				p.mu.Unlock()
				wg.Go(func() {
					_, _ = io.Copy(io.Discard, c) // until the client closes it
					h.closed.Store(time.Now().UnixNano())
				})
				continue
			}
			wg.Go(func() {
				time.Sleep(time.Duration(p.delay.Load()))
				s, err := net.Dial("tcp", p.target)
				if err != nil {
					_ = c.Close()
					return
				}
				track(s)
				wg.Go(func() { _, _ = io.Copy(s, c); _ = s.Close() })
				_, _ = io.Copy(c, s)
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return p
}

// url is the test server's URL through the proxy.
func (p *stuckProxy) url(t *testing.T) string {
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	u.Host = p.addr
	return u.String()
}

func (p *stuckProxy) heldConns() []*heldConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*heldConn(nil), p.held...)
}

// terminateSessions ends the server backends pids (a coordinator's
// sessions), as a restart or a failover would.
func terminateSessions(t *testing.T, pids ...int32) {
	t.Helper()
	for _, pid := range pids {
		var ok bool
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
		require.True(t, ok, "backend %d terminated", pid)
	}
}

func sessionPID(t *testing.T, s *session) int32 {
	t.Helper()
	require.NoError(t, s.lock(ctx(t)))
	defer s.unlock()
	return s.backendPID
}

// A lock session redialled for a caller, whose first connection is held
// unanswered (a proxy still routing to a node that is down), gives that
// attempt up after firstAttemptBound and connects at once with the next:
// the Acquire succeeds about a quarter of a second later, instead of after
// the connect timeout (10 s), or whenever the proxy gives up. Before
// dialSession, this Acquire took DefaultConnectTimeout.
func TestRedialAbandonsStuckConnection(t *testing.T) {
	t.Parallel()
	p := newStuckProxy(t)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = p.url(t) })
	l := c.GetLock("x")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	terminateSessions(t, sessionPID(t, c.lockSession(l.Key())))
	p.stuck.Store(1)
	began := time.Now()
	mustAcquire(t, l, NoWait)
	took := time.Since(began)
	require.NoError(t, l.Release(ctx(t)))
	held := p.heldConns()
	require.Len(t, held, 1, "the redial's first connection was held")
	closed := held[0].closed.Load()
	require.NotZero(t, closed, "the held connection was closed by the client")
	gaveUp := time.Unix(0, closed).Sub(held[0].accepted)
	t.Logf("acquire took %v; the held connection was given up after %v", took.Round(time.Millisecond), gaveUp.Round(time.Millisecond))
	require.GreaterOrEqual(t, gaveUp, firstAttemptBound-20*time.Millisecond)
	// A loaded machine delays the next connection; the connect timeout
	// is 10 s.
	require.Less(t, gaveUp, firstAttemptBound+time.Second)
	require.Less(t, took, firstAttemptBound+2*time.Second)
}

// A slow but healthy server (every connection takes 600 ms to reach it, as
// a just-promoted leader can for a moment) is connected by a redial at its
// own pace: the first attempt goes on while others start beside it (after
// 250 and 500 ms), and connects after about 0.6 s. When slow attempts were
// given up for new ones (attempts of 250 ms for 0.5 s, then of 500 ms for
// 1 s, then one of 1 s), it connected at the sixth, after 2.4 s. The
// coordinator then keeps a bound twice what that connection took, so the
// next redial connects at its first attempt.
func TestRedialConnectsSlowServer(t *testing.T) {
	t.Parallel()
	p := newStuckProxy(t)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = p.url(t) })
	l := c.GetLock("x")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
	require.Equal(t, int32(0), c.dialLevel.Load(), "a server answering at once keeps the first bound")

	sessions := func() (n int) {
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, c.sessionTag).Scan(&n))
		return n
	}
	open := sessions()
	const slow = 600 * time.Millisecond
	p.delay.Store(int64(slow))
	terminateSessions(t, sessionPID(t, c.lockSession(l.Key())))
	before := p.accepted.Load()
	began := time.Now()
	mustAcquire(t, l, NoWait)
	took := time.Since(began)
	require.NoError(t, l.Release(ctx(t)))
	attempts := p.accepted.Load() - before
	t.Logf("first redial: %d attempts, %v; level now %d", attempts, took.Round(time.Millisecond), c.dialLevel.Load())
	require.LessOrEqual(t, attempts, int32(maxDialAttempts), "attempts started beside the first, at most maxDialAttempts")
	// The first attempt's pace, with room for a loaded machine; giving
	// slow attempts up took 2.4 s.
	require.Less(t, took, slow+700*time.Millisecond)
	require.GreaterOrEqual(t, attemptBound(c.dialLevel.Load(), DefaultConnectTimeout), 2*slow)
	// The attempts that lost are closed: the coordinator has the sessions
	// it had before, the lock session's a new one.
	require.Eventually(t, func() bool { return sessions() == open }, 5*time.Second, 20*time.Millisecond,
		"the losing attempts' connections closed")

	terminateSessions(t, sessionPID(t, c.lockSession(l.Key())))
	before = p.accepted.Load()
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
	require.Equal(t, int32(1), p.accepted.Load()-before, "the next redial starts from a bound the server needs")
}

// The control session's reconnect, whose first connection is held
// unanswered, gives it up after firstAttemptBound and reconnects with the
// next: within about a second of the break, where it took the connect
// timeout (10 s) before dialSession.
func TestReconnectAbandonsStuckConnection(t *testing.T) {
	t.Parallel()
	p := newStuckProxy(t)
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = p.url(t)
		// The beat finds the control session broken within an interval.
		cfg.HeartbeatInterval = 250 * time.Millisecond
		cfg.InitialReconnectBackoff = 20 * time.Millisecond
	})
	before := c.Stats().Reconnects
	p.stuck.Store(1)
	terminateSessions(t, sessionPID(t, c.control))
	began := time.Now()
	require.Eventually(t, func() bool { return c.Stats().Reconnects > before }, 8*time.Second, 5*time.Millisecond,
		"the control session reconnected well within the connect timeout")
	took := time.Since(began)
	held := p.heldConns()
	require.Len(t, held, 1, "the reconnect's first connection was held")
	closed := held[0].closed.Load()
	require.NotZero(t, closed, "the held connection was closed by the client")
	gaveUp := time.Unix(0, closed).Sub(held[0].accepted)
	t.Logf("reconnected %v after the break; the held connection was given up after %v", took.Round(time.Millisecond), gaveUp.Round(time.Millisecond))
	require.GreaterOrEqual(t, gaveUp, firstAttemptBound-20*time.Millisecond)
	require.Less(t, gaveUp, firstAttemptBound+time.Second)
	mustAcquire(t, c.GetLock("after"), NoWait)
}

// The bounds double from firstAttemptBound up to the connect timeout, and
// a success keeps twice what it took.
func TestAttemptBounds(t *testing.T) {
	t.Parallel()
	full := DefaultConnectTimeout
	require.Equal(t, 250*time.Millisecond, attemptBound(0, full))
	require.Equal(t, 500*time.Millisecond, attemptBound(1, full))
	require.Equal(t, 8*time.Second, attemptBound(5, full))
	require.Equal(t, full, attemptBound(6, full))
	require.Equal(t, full, attemptBound(maxAttemptLevel, full))
	require.Equal(t, 100*time.Millisecond, attemptBound(0, 100*time.Millisecond), "never above the connect timeout")
	require.Equal(t, int32(0), levelFor(10*time.Millisecond))
	require.Equal(t, int32(0), levelFor(firstAttemptBound))
	require.Equal(t, int32(1), levelFor(firstAttemptBound+time.Millisecond))
	require.Equal(t, int32(3), levelFor(1200*time.Millisecond))
	require.Equal(t, int32(maxAttemptLevel), levelFor(time.Hour))
}

// A proxy that holds every connection made for 2.5 s (as HAProxy did
// through a switchover at load 17, routing to the old node), then
// forwards: a redial under way connects within about a second of the
// proxy's change. The bound of the attempt in flight then decides, and it
// is kept to about a third of the stall (see raiseDialLevel); when each
// abandoned attempt doubled it, the attempt in flight was one of 2 s,
// given up 1.25 s after the change.
func TestRedialAcrossLongStall(t *testing.T) {
	t.Parallel()
	p := newStuckProxy(t)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = p.url(t) })
	l := c.GetLock("x")
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))

	const stall = 2500 * time.Millisecond
	terminateSessions(t, sessionPID(t, c.lockSession(l.Key())))
	began := time.Now()
	p.stuckUntil.Store(began.Add(stall).UnixNano())
	mustAcquire(t, l, NoWait)
	after := time.Since(began) - stall
	require.NoError(t, l.Release(ctx(t)))
	t.Logf("acquired %v after the proxy began to forward; %d connections held", after.Round(time.Millisecond), len(p.heldConns()))
	require.Less(t, after, time.Second)
}

// waitBehindProxy returns a proxy to the test server, a coordinator
// connected through it, and a hold on "x" by another coordinator (direct),
// for tests of how the first one's waits dial their sessions.
func waitBehindProxy(t *testing.T) (*stuckProxy, *Coordinator, *Lock) {
	t.Helper()
	p := newStuckProxy(t)
	prefix := testPrefix(t)
	holder := newCoord(t, prefix)
	c := newCoord(t, prefix, func(cfg *Config) { cfg.ConnString = p.url(t) })
	h := holder.GetLock("x")
	mustAcquire(t, h, NoWait)
	return p, c, h
}

// acquireLater acquires l in a goroutine (Timeout 30 s) and sends its
// error, or one for a timeout.
func acquireLater(t *testing.T, l *Lock) <-chan error {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Timeout(30*time.Second))
		if err == nil && !ok {
			err = errors.New("timed out")
		}
		got <- err
	}()
	return got
}

// A wait session is dialled once, within the attempt bound (250 ms while
// the server answers at once): against a server that now takes 800 ms to
// connect, the wait makes one attempt, gives it up, and waits beyond the
// budget (no second attempt within refusalPause), where a raced dial made
// three attempts in 800 ms. The wait is still granted when the holder lets
// go (see dialSession).
func TestWaitSessionDialOnce(t *testing.T) {
	t.Parallel()
	p, c, h := waitBehindProxy(t)
	require.Equal(t, int32(0), c.dialLevel.Load(), "a server answering at once keeps the first bound")
	const slow = 800 * time.Millisecond
	p.delay.Store(int64(slow))
	before := p.accepted.Load()
	l := c.GetLock("x")
	got := acquireLater(t, l)
	require.Eventually(t, func() bool { return p.accepted.Load() > before }, 10*time.Second, 5*time.Millisecond,
		"the wait dialled a wait session")
	time.Sleep(refusalPause - 100*time.Millisecond)
	require.Equal(t, int32(1), p.accepted.Load()-before, "one attempt, given up, and none within refusalPause")
	require.Eventually(t, func() bool { return c.waits.refused.recent() }, 5*time.Second, 5*time.Millisecond,
		"the slow dial counted as a refusal")
	require.NoError(t, h.Release(ctx(t)))
	require.NoError(t, <-got, "granted beyond the budget")
	require.NoError(t, l.Release(ctx(t)))
}

// A server that takes longer than the first bound to connect still gets
// wait sessions: each slow dial raises the bound (as a redial's slow
// attempts do), and after a few refusalPauses one connects.
func TestWaitSessionDialBoundFollowsServer(t *testing.T) {
	t.Parallel()
	p, c, h := waitBehindProxy(t)
	// A wait session connected: not a count of the server's backends,
	// which also sees, for a moment, the backend the proxy opens for an
	// attempt the coordinator has already given up (the proxy forwards
	// its startup message after the delay): counted so, the test saw a
	// session within the first bound, 2 runs in 8.
	connected := func() bool {
		for _, s := range c.waits.all() {
			if s.raw.Load() != nil {
				return true
			}
		}
		return false
	}
	p.delay.Store(int64(400 * time.Millisecond)) // over the first bound, within the second
	l := c.GetLock("x")
	got := acquireLater(t, l)
	require.Eventually(t, connected, 15*time.Second, 10*time.Millisecond,
		"a wait session connected once the bound had grown past the server's 400 ms")
	require.GreaterOrEqual(t, attemptBound(c.dialLevel.Load(), DefaultConnectTimeout), 800*time.Millisecond,
		"the bound is set from what the connection took")
	require.NoError(t, h.Release(ctx(t)))
	require.NoError(t, <-got)
	require.NoError(t, l.Release(ctx(t)))
}
