package hatest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/internal/hastack"
)

// watchEvery is how often the watcher looks at every node: the resolution
// of the "new leader writable" time.
const watchEvery = 10 * time.Millisecond

// watcher looks at every node of a stack every watchEvery, straight
// (not through HAProxy), on a connection of its own per node: whether it
// answers, whether it is out of recovery (accepts writes), and whether a
// node in recovery holds any advisory lock of a pgcoord session, which
// must never happen.
type watcher struct {
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu      sync.Mutex
	state   map[*hastack.Node]string // "primary", "replica", "down"
	changes []change
	// onReplica describes every sighting of a pgcoord lock on a node in
	// recovery.
	onReplica []string
	// proxy is HAProxy's view of the nodes (its stats socket's server
	// status, sampled every proxyEvery) each time it changed.
	proxy []proxyView
}

// proxyEvery is how often the watcher asks HAProxy for its view.
const proxyEvery = 100 * time.Millisecond

// proxyView is HAProxy's view at a sample: "node1 UP, node2 DOWN", or the
// error of the stats socket.
type proxyView struct {
	at   time.Time
	view string
}

// change is a node seen in a new state.
type change struct {
	node  *hastack.Node
	at    time.Time
	state string
}

func watch(st *hastack.Stack) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, state: map[*hastack.Node]string{}}
	for _, n := range st.Nodes() {
		w.done.Add(1)
		go w.loop(ctx, n)
	}
	w.done.Add(1)
	go w.proxyLoop(ctx, st)
	return w
}

// proxyLoop samples HAProxy's view every proxyEvery and keeps its changes.
func (w *watcher) proxyLoop(ctx context.Context, st *hastack.Stack) {
	defer w.done.Done()
	tick := time.NewTicker(proxyEvery)
	defer tick.Stop()
	for {
		at := time.Now()
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		status, err := st.HAProxyStatus(qctx)
		cancel()
		view := ""
		if err != nil {
			view = err.Error()
		} else {
			var nodes []string
			for name, state := range status {
				nodes = append(nodes, name+" "+state)
			}
			slices.Sort(nodes)
			view = strings.Join(nodes, ", ")
		}
		w.mu.Lock()
		if ctx.Err() == nil && (len(w.proxy) == 0 || w.proxy[len(w.proxy)-1].view != view) {
			w.proxy = append(w.proxy, proxyView{at: at, view: view})
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// events are the nodes' changes of state and HAProxy's changes of view
// from from to to, each preceded by the one in force at from.
func (w *watcher) events(from, to time.Time) []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []event
	add := func(at time.Time, what string, inForce *event) {
		switch {
		case at.Before(from):
			*inForce = event{at: at, what: what + " (in force at the start)"}
		case !at.After(to):
			out = append(out, event{at: at, what: what})
		}
	}
	inForce := map[*hastack.Node]*event{}
	for _, c := range w.changes {
		if inForce[c.node] == nil {
			inForce[c.node] = &event{}
		}
		add(c.at, fmt.Sprintf("watcher: %s %s", c.node.Name(), c.state), inForce[c.node])
	}
	var proxyInForce event
	for _, p := range w.proxy {
		add(p.at, "haproxy: "+p.view, &proxyInForce)
	}
	for _, e := range inForce {
		if !e.at.IsZero() {
			out = append(out, *e)
		}
	}
	if !proxyInForce.at.IsZero() {
		out = append(out, proxyInForce)
	}
	return out
}

func (w *watcher) stop() {
	w.cancel()
	w.done.Wait()
}

func (w *watcher) loop(ctx context.Context, n *hastack.Node) {
	defer w.done.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		at := time.Now()
		state := "down"
		var locks int
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			conn, _ = pgx.Connect(cctx, n.URL()+"&application_name=hatest-watcher")
			cancel()
		}
		if conn != nil {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			var inRecovery bool
			err := conn.QueryRow(qctx, `SELECT pg_is_in_recovery(),
				(SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
				 WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'pgcoord:%')`).Scan(&inRecovery, &locks)
			cancel()
			if err != nil {
				_ = conn.Close(context.Background())
				conn = nil
			} else if inRecovery {
				state = "replica"
			} else {
				state = "primary"
			}
		}
		w.mu.Lock()
		if w.state[n] != state {
			w.state[n] = state
			w.changes = append(w.changes, change{node: n, at: at, state: state})
		}
		if state == "replica" && locks > 0 && len(w.onReplica) < 20 {
			w.onReplica = append(w.onReplica, fmt.Sprintf("%s in recovery held %d pgcoord advisory locks at %s", n.Name(), locks, at.Format("15:04:05.000")))
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// first returns the first time at or after after that n was seen in state,
// zero when it was not (yet).
func (w *watcher) first(n *hastack.Node, state string, after time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		if c.node == n && c.state == state && !c.at.Before(after) {
			return c.at
		}
	}
	// Already in that state when after came.
	var last change
	for _, c := range w.changes {
		if c.node == n && c.at.Before(after) {
			last = c
		}
	}
	if last.state == state {
		return after
	}
	return time.Time{}
}

// firstNot returns the first time at or after after that n was seen in a
// state other than state.
func (w *watcher) firstNot(n *hastack.Node, state string, after time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		if c.node == n && c.state != state && !c.at.Before(after) {
			return c.at
		}
	}
	return time.Time{}
}

// twoPrimaries is how long, after after, two nodes were both seen out of
// recovery at once (a split brain).
func (w *watcher) twoPrimaries(after time.Time, until time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	state := map[*hastack.Node]string{}
	var total time.Duration
	var since time.Time
	count := func() int {
		n := 0
		for _, s := range state {
			if s == "primary" {
				n++
			}
		}
		return n
	}
	for _, c := range w.changes {
		before := count()
		state[c.node] = c.state
		now := count()
		if c.at.Before(after) {
			continue
		}
		if before < 2 && now >= 2 {
			since = c.at
		}
		if before >= 2 && now < 2 && !since.IsZero() {
			total += c.at.Sub(since)
			since = time.Time{}
		}
	}
	if count() >= 2 {
		if since.IsZero() {
			since = after
		}
		total += until.Sub(since)
	}
	return total
}

func (w *watcher) replicaLocks() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.onReplica...)
}
