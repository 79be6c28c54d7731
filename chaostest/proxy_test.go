package chaostest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// chaosProxy forwards TCP connections to a test server through Shopify's
// toxiproxy (v2, used in-process as a library: no server binary, no HTTP
// API) and can
//
//   - delay every chunk of data in both directions (latency: toxiproxy's
//     "latency" toxic on both streams);
//   - partition: black-hole every connection, current and new (toxiproxy's
//     "timeout" toxic with timeout 0 on both streams, preceded upstream by a
//     "slow_close" toxic so that a client giving up is not heard by the
//     server either: the server notices only by idle_session_timeout);
//   - reset a few random connections (both ends closed at once: the server
//     ends the session and frees its locks at once);
//   - black-hole a few random connections for good (both directions
//     swallowed, no socket closed toward the server).
//
// Why the last two are not toxiproxy's stock "reset_peer" and "timeout"
// toxics with a toxicity below 1: a toxic applies to every connection of a
// proxy, and its toxicity is a coin tossed per connection and direction
// each time the toxic (re)starts on it. So the tosses for the two
// directions of one connection are independent (half black holes); they
// are tossed again whenever a toxic is added after it or removed (the
// latency fault does that, so black-holed connections would come back to
// life, with bytes missing); every connection opened while the toxic is in
// place is tossed too; nobody learns which connections, or how many, were
// hit (the chaos journal needs "did the fault happen?"); removing a
// "timeout" toxic closes every connection of the proxy, chosen or not; and
// "reset_peer" fires only on the next chunk of data (an idle connection
// is not reset until it is used), with SO_LINGER 0 set only on connections
// that started while it was in place. So the per-connection faults go
// through connToxic, a toxic of our own registered with toxiproxy (its
// documented extension point, toxics.Register): it sits on both streams of
// every connection, passes data through, and holds per-connection state
// (StatefulToxic) through which a chosen connection is black-holed or
// severed. Severing closes both ends (toxiproxy owns the sockets and does
// not expose them, so this is a FIN, not an RST); for the server that is
// the same: the session ends at once.
type chaosProxy struct {
	t     testing.TB
	proxy *toxiproxy.Proxy

	// open counts connection ends (one per direction) whose stream is not
	// over yet; close waits for it to reach zero.
	open atomic.Int64

	// partitioned: the partition toxics are in place.
	partitioned atomic.Bool

	// connMu guards the connections. It is taken from toxiproxy's
	// goroutines (accept loop, Pipe), so it is never held while calling
	// into toxiproxy.
	connMu  sync.Mutex
	conns   map[*proxyConn]struct{}
	pending *proxyConn // upstream end seen, downstream end not yet

	// mu serializes changes of the stock toxics and close.
	mu      sync.Mutex
	toxics  []string // names of the stock toxics in place, in order added
	latency time.Duration
	closed  bool
}

// proxyConn is one proxied connection as connToxic sees it.
type proxyConn struct {
	black   atomic.Bool   // both directions swallowed
	cut     chan struct{} // closed: sever both ends
	cutOnce sync.Once
	// serverGone is closed when the server → client stream is over: the
	// server closed its end (or it was closed for it).
	serverGone     chan struct{}
	serverGoneOnce sync.Once
	ended          atomic.Int32 // directions whose stream is over
	// pid is the connection's backend, read from the server's
	// BackendKeyData message as it passes (see keySniffer); 0 until then,
	// or if the connection never got that far.
	pid atomic.Int32
}

func (c *proxyConn) sever()          { c.cutOnce.Do(func() { close(c.cut) }) }
func (c *proxyConn) severed() bool   { return isClosed(c.cut) }
func (c *proxyConn) markServerGone() { c.serverGoneOnce.Do(func() { close(c.serverGone) }) }

const (
	connToxicType = "pgcoord_conn"
	// partitionHold is how long slow_close keeps the server end of a
	// partitioned connection open after the client went away: longer than
	// any test; close and dropBlackholed end it early.
	partitionHold = 24 * time.Hour
)

func init() {
	toxics.Register(connToxicType, new(connToxic))
	// toxiproxy logs through zerolog. Its loggers here are all zerolog.Nop
	// (see startChaosProxy); the global level covers the few spots that
	// use zerolog's global logger.
	zerolog.SetGlobalLevel(zerolog.Disabled)
}

func startChaosProxy(t *testing.T, target string) *chaosProxy {
	p := &chaosProxy{t: t, conns: map[*proxyConn]struct{}{}}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p.proxy = toxiproxy.NewProxy(srv, "pgcoord-chaos", "127.0.0.1:0", target)
	// connToxic goes on both streams before the proxy starts, so that every
	// connection has it from its first byte, and its per-connection state
	// is created upstream then downstream for each connection in turn, in
	// toxiproxy's accept loop (see newEnd).
	for _, dir := range []string{"upstream", "downstream"} {
		w, err := p.addToxic("conn_"+dir, connToxicType, dir, map[string]any{"upstream": dir == "upstream"})
		require.NoError(t, err)
		w.Toxic.(*connToxic).p = p
	}
	require.NoError(t, p.proxy.Start())
	return p
}

// proxiedTestURL starts a chaos proxy in front of the test server and
// returns it, with the test server's URL pointed at it.
func proxiedTestURL(t *testing.T) (*chaosProxy, *url.URL) {
	u, err := url.Parse(testURL)
	require.NoError(t, err)
	proxy := startChaosProxy(t, u.Host)
	t.Cleanup(proxy.close)
	u.Host = proxy.addr()
	return proxy, u
}

// addr is where clients connect (toxiproxy sets Listen to the bound
// address when it starts).
func (p *chaosProxy) addr() string { return p.proxy.Listen }

func (p *chaosProxy) addToxic(name, typ, stream string, attrs any) (*toxics.ToxicWrapper, error) {
	body, err := json.Marshal(map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
	})
	if err != nil {
		return nil, err
	}
	return p.proxy.Toxics.AddToxicJson(bytes.NewReader(body))
}

// addStock adds a stock toxic and records it. p.mu is held.
func (p *chaosProxy) addStock(name, typ, stream string, attrs any) {
	if _, err := p.addToxic(name, typ, stream, attrs); err != nil {
		p.t.Errorf("chaos proxy: adding toxic %s: %v", name, err)
		return
	}
	p.toxics = append(p.toxics, name)
}

// removeStock removes the named stock toxics in the order given. Callers
// name the latency toxics before the partition ones, and "slow_close"
// before the "timeout" behind it. Removing a "timeout" toxic closes its
// stubs (its Cleanup), and toxiproxy then leaves those stubs in each
// link's chain while renumbering the proxy's toxics, so a toxic after it
// would be looked for at the wrong place; and the links this closes are
// forgotten, so a "slow_close" still holding one would never be
// interrupted (a goroutine left for partitionHold). p.mu is held.
func (p *chaosProxy) removeStock(names ...string) {
	ctx := zerolog.Nop().WithContext(context.Background())
	for _, name := range names {
		i := slices.Index(p.toxics, name)
		if i < 0 {
			continue
		}
		if err := p.proxy.Toxics.RemoveToxic(ctx, name); err != nil {
			p.t.Errorf("chaos proxy: removing toxic %s: %v", name, err)
		}
		p.toxics = slices.Delete(p.toxics, i, i+1)
	}
}

var (
	latencyToxics   = []string{"latency_up", "latency_down"}
	partitionToxics = []string{"partition_hold", "partition_up", "partition_down"}
)

// live returns the connections still forwarding.
func (p *chaosProxy) live() []*proxyConn {
	if p.partitioned.Load() {
		return nil
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	var out []*proxyConn
	for c := range p.conns {
		if c != p.pending && !c.black.Load() && !c.severed() && c.ended.Load() == 0 {
			out = append(out, c)
		}
	}
	return out
}

// some picks a random non-empty subset of the live connections.
func (p *chaosProxy) some(rng *rand.Rand) []*proxyConn {
	all := p.live()
	if len(all) == 0 {
		return nil
	}
	rng.Shuffle(len(all), func(i, k int) { all[i], all[k] = all[k], all[i] })
	return all[:1+rng.IntN(min(len(all), 4))]
}

// reset closes both ends of a few connections at once; it returns how
// many, and the sessions (sessionName) of those whose backend is known:
// exactly the sessions the fault ended. (A FIN, not an RST: see
// chaosProxy.)
func (p *chaosProxy) reset(rng *rand.Rand) (int, []string) {
	cs := p.some(rng)
	var victims []string
	for _, c := range cs {
		c.sever()
		if pid := c.pid.Load(); pid != 0 {
			victims = append(victims, sessionName(pid))
		}
	}
	return len(cs), victims
}

// blackhole silences a few connections for good; it returns how many.
func (p *chaosProxy) blackhole(rng *rand.Rand) int {
	cs := p.some(rng)
	for _, c := range cs {
		c.black.Store(true)
	}
	return len(cs)
}

// partition black-holes every connection, and every new one: a network
// partition as a client sees it, with no FIN and no RST. Both streams get
// toxiproxy's "timeout" toxic with timeout 0 (data dropped, nothing
// closed); upstream, a "slow_close" toxic in front of it holds back the
// end of the client's stream, which "timeout" would otherwise pass on as
// a close of the server end.
func (p *chaosProxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.partitioned.Load() || p.closed {
		return
	}
	p.partitioned.Store(true)
	p.addStock("partition_hold", "slow_close", "upstream", map[string]any{"delay": partitionHold.Milliseconds()})
	p.addStock("partition_up", "timeout", "upstream", map[string]any{"timeout": 0})
	p.addStock("partition_down", "timeout", "downstream", map[string]any{"timeout": 0})
}

// dropBlackholed closes both ends of every black-holed connection. After
// a partition that is every connection, and the partition ends: toxiproxy
// can only let go of the connections it black-holes by removing the
// toxics, which lets new connections through again.
func (p *chaosProxy) dropBlackholed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	partitioned := p.partitioned.Load()
	for _, c := range p.allConns() {
		if partitioned || c.black.Load() {
			c.sever()
		}
	}
	if partitioned {
		// Latency toxics added after the partition ones come off first
		// (see removeStock), and go back on after.
		d := p.latency
		p.setLatencyLocked(0)
		p.removeStock(partitionToxics...)
		p.partitioned.Store(false)
		p.setLatencyLocked(d)
	}
}

// setLatency delays every chunk of data in both directions by d (0: no
// delay). The toxics are replaced rather than updated: toxiproxy updates a
// toxic's attributes in place while its stubs read them.
func (p *chaosProxy) setLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLatencyLocked(d)
}

func (p *chaosProxy) setLatencyLocked(d time.Duration) {
	if p.closed || d == p.latency {
		return
	}
	if p.latency > 0 {
		p.removeStock(latencyToxics...)
	}
	p.latency = d
	if d > 0 {
		attrs := map[string]any{"latency": d.Milliseconds(), "jitter": 0}
		p.addStock("latency_up", "latency", "upstream", attrs)
		p.addStock("latency_down", "latency", "downstream", attrs)
	}
}

// close stops accepting, closes every connection and waits for the
// proxy's connections to be over. Idempotent.
func (p *chaosProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	// Stop waits for the accept loop and closes both sockets of every
	// connection; severing releases the server ends connToxic holds, and
	// removing the stock toxics the ones slow_close holds.
	p.proxy.Stop()
	for _, c := range p.allConns() {
		c.sever()
	}
	p.removeStock(slices.Concat(latencyToxics, partitionToxics)...)
	p.partitioned.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for p.open.Load() > 0 {
		if time.Now().After(deadline) {
			p.t.Errorf("chaos proxy: %d connection ends still open 10s after close", p.open.Load())
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *chaosProxy) allConns() []*proxyConn {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	out := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// newEnd creates the state of one direction of a new connection. toxiproxy
// starts a connection's upstream link, then its downstream link, each
// creating its toxics' state, from its single accept loop: so a downstream
// end belongs to the upstream end just before it.
func (p *chaosProxy) newEnd(upstream bool) *connEnd {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	var c *proxyConn
	if upstream || p.pending == nil {
		c = &proxyConn{cut: make(chan struct{}), serverGone: make(chan struct{})}
		p.conns[c] = struct{}{}
		if upstream {
			p.pending = c
		}
	} else {
		c, p.pending = p.pending, nil
	}
	p.open.Add(1)
	return &connEnd{p: p, c: c, upstream: upstream}
}

// connToxic is the toxic every connection of a chaosProxy goes through,
// on both streams: it passes data on, swallows it when its connection is
// black-holed, and closes its stream's destination when its connection is
// severed.
type connToxic struct {
	Upstream bool `json:"upstream"`
	p        *chaosProxy
}

// connEnd is connToxic's state for one direction of one connection; it
// lasts as long as the connection, across restarts of the toxic's Pipe.
type connEnd struct {
	p        *chaosProxy
	c        *proxyConn
	upstream bool
	once     sync.Once
	key      keySniffer // downstream only
}

func (t *connToxic) NewState() any { return t.p.newEnd(t.Upstream) }

func (t *connToxic) Pipe(stub *toxics.ToxicStub) {
	e := stub.State.(*connEnd)
	c := e.c
	for {
		select {
		case <-stub.Interrupt:
			return
		case <-c.cut:
			e.sever(stub)
			return
		case chunk := <-stub.Input:
			if chunk == nil {
				e.eof(stub)
				return
			}
			if c.black.Load() || c.severed() {
				continue // swallowed (or the cut case is next)
			}
			if !e.upstream && !e.key.done {
				if pid := e.key.read(chunk.Data); pid != 0 {
					c.pid.Store(pid)
				}
			}
			select {
			case stub.Output <- chunk:
			case <-c.cut:
				e.sever(stub)
				return
			}
		}
	}
}

// eof: the stream's source is gone. When a black-holed client goes away
// the server must not hear of it: the server end stays open until the
// server gives up itself (idle_session_timeout) or the connection is
// severed. Otherwise the end of the stream is passed on, and toxiproxy
// closes the destination.
func (e *connEnd) eof(stub *toxics.ToxicStub) {
	if e.upstream && e.c.black.Load() {
		select {
		case <-stub.Interrupt:
			// Pipe runs again, reads the closed input again and comes back.
			return
		case <-e.c.serverGone:
		case <-e.c.cut:
		}
	}
	stub.Close()
	e.finish()
}

// sever closes the stream: toxiproxy then closes its destination (the
// server for the upstream stream, the client for the downstream one),
// which ends the other stream's source. The input is drained until its
// reader stops, so that nothing upstream of this stub blocks on it.
func (e *connEnd) sever(stub *toxics.ToxicStub) {
	stub.Close()
	for range stub.Input {
	}
	e.finish()
}

func (e *connEnd) finish() {
	e.once.Do(func() {
		if !e.upstream {
			e.c.markServerGone()
		}
		if e.c.ended.Add(1) == 2 {
			e.p.connMu.Lock()
			delete(e.p.conns, e.c)
			e.p.connMu.Unlock()
		}
		e.p.open.Add(-1)
	})
}

// keySniffer reads the first messages of a connection's server stream for
// its BackendKeyData ('K', which carries the backend's pid): a severed
// connection then names the session it ended, where the server alone
// could only say which backends went away at about that time. Only the
// start of a connection is read; done is set once the key has passed, or
// cannot come (the stream went encrypted, or the server gave up).
type keySniffer struct {
	buf     []byte
	started bool // past the one-byte answers to SSL and GSS requests
	done    bool
}

// read takes the next chunk of the server stream and returns the backend's
// pid once its BackendKeyData has passed, 0 otherwise.
func (k *keySniffer) read(data []byte) int32 {
	k.buf = append(k.buf, data...)
	for !k.done {
		if !k.started {
			if len(k.buf) == 0 {
				return 0
			}
			switch k.buf[0] {
			case 'N': // no SSL (or GSS): the client goes on in the clear
				k.buf = k.buf[1:]
				continue
			case 'S', 'G': // encrypted from here on
				k.done = true
				return 0
			}
			k.started = true
		}
		// A message: its type, then its length (which counts itself).
		if len(k.buf) < 5 {
			return 0
		}
		n := int(binary.BigEndian.Uint32(k.buf[1:5]))
		if n < 4 || n > 1<<16 {
			k.done = true // not a startup exchange this reads
			return 0
		}
		if len(k.buf) < 1+n {
			return 0
		}
		typ, body := k.buf[0], k.buf[5:1+n]
		k.buf = k.buf[1+n:]
		switch {
		case typ == 'K' && len(body) >= 4:
			k.done = true
			k.buf = nil
			return int32(binary.BigEndian.Uint32(body[:4]))
		case typ == 'Z' || typ == 'E':
			k.done = true // ready, or refused, without a key
		}
	}
	k.buf = nil
	return 0
}
