package pgcoord

import (
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// blackholeProxy forwards TCP to the test server until cut, after which it
// drops everything in both directions without closing any socket: a
// network partition as a holder sees it, with no FIN and no RST.
type blackholeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	closed bool
	conns  []net.Conn
	// pipes counts the copying goroutines, so close can wait for them.
	pipes sync.WaitGroup
}

func startBlackholeProxy(t *testing.T) (*blackholeProxy, string) {
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &blackholeProxy{ln: ln, target: u.Host}
	p.pipes.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *blackholeProxy) serve() {
	defer p.pipes.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			// Accepted while closing: close, or it would outlive close.
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns = append(p.conns, c, up)
		p.pipes.Add(2)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies until the proxy is cut, then swallows what comes.
func (p *blackholeProxy) pipe(from, to net.Conn) {
	defer p.pipes.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			continue
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *blackholeProxy) blackhole() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// close stops the proxy and waits for its goroutines; idempotent.
func (p *blackholeProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.pipes.Wait()
}

// A holder cut off without a FIN learns of the loss within two heartbeats,
// and before the server (idle_session_timeout) lets anyone else take the
// lock.
func TestCutOffHolderToldBeforeTakeover(t *testing.T) {
	t.Parallel()
	proxy, proxied := startBlackholeProxy(t)
	p := testPrefix(t)
	const hb = 200 * time.Millisecond
	holder := newCoord(t, p, func(cfg *Config) {
		cfg.ConnString = proxied
		cfg.HeartbeatInterval = hb
		cfg.SessionTimeout = 5 * hb
	})
	l := holder.GetLock("partitioned")
	mustAcquire(t, l, NoWait)

	other := newCoord(t, p)
	w := other.GetLock("partitioned")
	taken := make(chan time.Time, 1)
	go func() {
		ok, err := w.Acquire(ctx(t), Timeout(20*time.Second))
		if ok && err == nil {
			taken <- time.Now()
		}
		close(taken)
	}()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)

	proxy.blackhole()
	cut := time.Now()
	var told time.Time
	select {
	case <-l.Lost():
		told = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the cut-off holder was never told")
	}
	require.Less(t, told.Sub(cut), 2*hb+300*time.Millisecond, "told later than two heartbeats")
	at, ok := <-taken
	require.True(t, ok, "the server never freed the cut-off holder's lock")
	require.True(t, told.Before(at), "someone else took the lock before the holder was told")
	require.NoError(t, w.Release(ctx(t)))
	require.False(t, holder.IsActive())
	// End the partition before the holder's Stop: pgx's background close of
	// its broken connections sends cancel requests through the proxy.
	// Stop cannot mark the member stopped (its server is out of reach), but
	// it returns, and leaves nothing running.
	proxy.close()
	_ = holder.Stop(ctx(t))
}

// A waiter does not hold a snapshot open for long: CREATE INDEX
// CONCURRENTLY, which waits for every older snapshot, finishes while a
// coordinator waits for a busy lock.
func TestWaiterDoesNotBlockCreateIndexConcurrently(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	blocker := other.GetLock("long")
	mustAcquire(t, blocker, NoWait)
	w := c.GetLock("long")
	res := make(chan bool, 1)
	go func() { ok, _ := w.Acquire(ctx(t), Wait); res <- ok }()
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 10*time.Second, 10*time.Millisecond)

	table := "cic_" + randomSuffix()
	_, err := testPool.Exec(ctx(t), `CREATE TABLE `+table+` (id int)`)
	require.NoError(t, err)
	defer testPool.Exec(ctx(t), `DROP TABLE `+table)
	conn := connect(t, testURL)
	_, err = conn.Exec(ctx(t), `SET statement_timeout = '15s'`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx(t), `CREATE INDEX CONCURRENTLY ON `+table+` (id)`)
	require.NoError(t, err, "CREATE INDEX CONCURRENTLY was blocked by the waiter")
	// Still waiting (between two slices there may be a moment without).
	require.Eventually(t, func() bool { return waiters(t, w.Key()) == 1 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, blocker.Release(ctx(t)))
	require.True(t, <-res)
	require.NoError(t, w.Release(ctx(t)))
}
