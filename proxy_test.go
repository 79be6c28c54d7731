package pgcoord

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chaosProxy forwards TCP connections to a test server and can reset
// them (RST to both ends: the server ends the session and frees its locks
// at once), black-hole them (both directions swallowed, no socket closed:
// a partition, which the server notices only by idle_session_timeout), and
// delay every chunk of data (latency).
type chaosProxy struct {
	ln      net.Listener
	target  string
	latency atomic.Int64
	wg      sync.WaitGroup

	// partitioned makes every connection, current and new, black-holed.
	partitioned atomic.Bool

	mu     sync.Mutex
	pairs  map[*proxyPair]struct{}
	closed bool
}

type proxyPair struct {
	client, server net.Conn
	black          atomic.Bool
}

func startChaosProxy(t *testing.T, target string) *chaosProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &chaosProxy{ln: ln, target: target, pairs: map[*proxyPair]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p
}

func (p *chaosProxy) addr() string { return p.ln.Addr().String() }

func (p *chaosProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		pr := &proxyPair{client: c, server: up}
		pr.black.Store(p.partitioned.Load())
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.pairs[pr] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(pr, c, up, true)
		go p.pipe(pr, up, c, false)
	}
}

// pipe copies from one end to the other. When the client goes away the
// server end is closed too, unless the pair is black-holed: in a partition
// the server hears nothing. When the server goes away the client end is
// closed (after a black hole that is when idle_session_timeout fired).
func (p *chaosProxy) pipe(pr *proxyPair, from, to net.Conn, fromClient bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			from.Close()
			if fromClient && pr.black.Load() {
				// Keep the pair (and its server end) for close.
				return
			}
			to.Close()
			p.mu.Lock()
			delete(p.pairs, pr)
			p.mu.Unlock()
			return
		}
		if pr.black.Load() {
			continue
		}
		if d := time.Duration(p.latency.Load()); d > 0 {
			time.Sleep(d)
		}
		if _, err := to.Write(buf[:n]); err != nil {
			from.Close()
			to.Close()
			return
		}
	}
}

// live returns the pairs still forwarding.
func (p *chaosProxy) live() []*proxyPair {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*proxyPair
	for pr := range p.pairs {
		if !pr.black.Load() {
			out = append(out, pr)
		}
	}
	return out
}

// some picks a random non-empty subset of the live pairs.
func (p *chaosProxy) some(rng *rand.Rand) []*proxyPair {
	all := p.live()
	if len(all) == 0 {
		return nil
	}
	rng.Shuffle(len(all), func(i, k int) { all[i], all[k] = all[k], all[i] })
	return all[:1+rng.IntN(min(len(all), 4))]
}

// reset closes a few connections with RST on both ends; it returns how many.
func (p *chaosProxy) reset(rng *rand.Rand) int {
	prs := p.some(rng)
	for _, pr := range prs {
		for _, c := range []net.Conn{pr.client, pr.server} {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	}
	return len(prs)
}

// blackhole silences a few connections for good; it returns how many.
func (p *chaosProxy) blackhole(rng *rand.Rand) int {
	prs := p.some(rng)
	for _, pr := range prs {
		pr.black.Store(true)
	}
	return len(prs)
}

// partition black-holes every connection, and every new one: a network
// partition as a client sees it, with no FIN and no RST.
func (p *chaosProxy) partition() {
	p.partitioned.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		pr.black.Store(true)
	}
}

// dropBlackholed closes both ends of every black-holed connection.
func (p *chaosProxy) dropBlackholed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		if pr.black.Load() {
			pr.client.Close()
			pr.server.Close()
		}
	}
}

func (p *chaosProxy) setLatency(d time.Duration) { p.latency.Store(int64(d)) }

// close stops accepting, closes every connection and waits for the proxy's
// goroutines. Idempotent.
func (p *chaosProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for pr := range p.pairs {
		pr.client.Close()
		pr.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
