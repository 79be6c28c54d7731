package hastack

import (
	"errors"
	"io"
	"net"
	"sync"
)

// gate is a TCP forwarder on loopback between one Patroni node and etcd:
// each node reaches etcd only through its own gate (Patroni's etcd3
// use_proxies, so it never learns etcd's own address), and Cut stands for
// a network partition between that node and etcd. There is no iptables
// here, and a gate needs none.
type gate struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newGate(target string) (*gate, error) {
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		return nil, err
	}
	g := &gate{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	g.wg.Add(1)
	go g.accept()
	return g, nil
}

// addr is host:port of the gate.
func (g *gate) addr() string { return g.ln.Addr().String() }

func (g *gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		if g.cut || g.closed {
			// Partitioned: the connection is refused at once, as a
			// REJECT rule would.
			g.mu.Unlock()
			c.Close()
			continue
		}
		g.wg.Add(1)
		g.mu.Unlock()
		go g.forward(c)
	}
}

func (g *gate) forward(c net.Conn) {
	defer g.wg.Done()
	up, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.cut || g.closed {
		g.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	g.conns[c], g.conns[up] = struct{}{}, struct{}{}
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

// setCut partitions the node from etcd (every open connection severed, new
// ones refused) or heals the partition.
func (g *gate) setCut(cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cut = cut
	if cut {
		for c := range g.conns {
			c.Close()
		}
	}
}

func (g *gate) close() error {
	g.mu.Lock()
	g.closed = true
	for c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	err := g.ln.Close()
	g.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
