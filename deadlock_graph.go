package pgcoord

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// waitNode is one long wait as pgcoord.long_waits shows it: the wait of one
// goroutine of one member, with the locks its waiter holds (see
// actorGoroutines for whose holds count).
type waitNode struct {
	member    string
	id        int64
	goroutine int64
	name      string
	// keys are the keys the wait would take: one for a lock or an
	// election, every slot of a semaphore (any one will do).
	keys   []int64
	shared bool
	since  time.Time
	// held maps each key the waiter holds to whether it holds it shared
	// only.
	held map[int64]bool
}

func (n *waitNode) String() string {
	return fmt.Sprintf("member %s (goroutine %d)", n.member, n.goroutine)
}

// younger orders waits for the victim choice: the later since first, then
// the larger member id, then the larger wait id. Every member reading the
// same rows picks the same victim.
func younger(a, b *waitNode) bool {
	if !a.since.Equal(b.since) {
		return a.since.After(b.since)
	}
	if a.member != b.member {
		return a.member > b.member
	}
	return a.id > b.id
}

// deadlock is one cycle of waits found, with the wait to abort.
type deadlock struct {
	victim *waitNode
	// cycle is a cycle of waits through the victim, starting with it; each
	// waits for something the next one holds (or, shared, queues behind
	// the next one's exclusive wait), the last for something the victim
	// holds.
	cycle []*waitNode
	// members are the waits of the strongly connected component the cycle
	// was found in (sorted), the signature by which a later check knows
	// the same deadlock.
	members []*waitNode
}

// signature names the deadlock by its waits, the same in every check that
// finds it.
func (d *deadlock) signature() string {
	var b strings.Builder
	for _, n := range d.members {
		fmt.Fprintf(&b, "%s/%d;", n.member, n.id)
	}
	return b.String()
}

// describe says the cycle in words: "member A (goroutine 7) waits for "y"
// held by member B (goroutine 9), which waits for "x" held by member A
// (goroutine 7)".
func (d *deadlock) describe() string {
	var b strings.Builder
	for i, n := range d.cycle {
		next := d.cycle[(i+1)%len(d.cycle)]
		if i == 0 {
			b.WriteString(n.String())
		} else {
			b.WriteString(", which")
		}
		if n.shared && len(n.keys) == 1 && !next.holdsConflicting(n.keys[0], true) {
			if _, held := next.held[n.keys[0]]; held {
				fmt.Fprintf(&b, " waits for %s (shared), queued behind a writer that waits for %s", n.name, next)
			} else {
				fmt.Fprintf(&b, " waits for %s (shared), queued behind the exclusive wait of %s", n.name, next)
			}
			continue
		}
		fmt.Fprintf(&b, " waits for %s held by %s", n.name, next)
	}
	return b.String()
}

// holdsConflicting reports whether n holds key in a mode that excludes a
// wait for it (shared says the wait is shared).
func (n *waitNode) holdsConflicting(key int64, shared bool) bool {
	heldShared, ok := n.held[key]
	return ok && !(shared && heldShared)
}

// blockers returns the waits that stand in the way of w taking key: those
// that hold it in a conflicting mode and, for a shared wait of a lock, the
// exclusive waits for it (a reader queues behind a waiting writer, in this
// process's local table and on the server alike). w itself counts when it
// holds the key it waits for (two Locks of one name in one goroutine).
//
// A shared wait of a lock is blocked by the shared holders too: a reader
// that waits long waits either for an exclusive holder (then the only
// holder) or behind a writer (in the local table, the server's queue, the
// queue across members, or holding the writer's intent), and that writer
// waits for every holder. The writer itself is often not in nodes: a wait
// that answers for no hold is not published (longWaitParams), and an
// AcquireTx is never (TestDeadlockReaderBehindIdleWriter).
func blockers(nodes []*waitNode, w *waitNode, key int64) []*waitNode {
	var out []*waitNode
	for _, v := range nodes {
		switch {
		case v.holdsConflicting(key, w.shared && len(w.keys) != 1):
			out = append(out, v)
		case w.shared && len(w.keys) == 1 && v != w && !v.shared && slices.Contains(v.keys, key):
			out = append(out, v)
		}
	}
	return out
}

// findDeadlocks returns the deadlocks among nodes, one per strongly
// connected component of stuck waits.
//
// Holders that are not in nodes are not waiting long (they run, or wait
// for less than a second): they will release, so they free whatever waits
// for them. A wait is stuck when, for every key it may take (a semaphore
// may take any of its slots), some stuck wait stands in the way: this is
// the graph reduction of the AND-OR wait model, which is exact for lock
// waits (one key) and semaphore waits (any of n keys) alike. A wait merely
// long, behind a holder that works, is never stuck.
func findDeadlocks(nodes []*waitNode) []deadlock {
	block := make(map[*waitNode][][]*waitNode, len(nodes))
	for _, w := range nodes {
		for _, k := range w.keys {
			block[w] = append(block[w], blockers(nodes, w, k))
		}
	}
	free := map[*waitNode]bool{}
	for changed := true; changed; {
		changed = false
		for _, w := range nodes {
			if free[w] {
				continue
			}
			for _, bs := range block[w] {
				if !slices.ContainsFunc(bs, func(v *waitNode) bool { return !free[v] }) {
					free[w], changed = true, true
					break
				}
			}
		}
	}
	// Edges among the stuck: w -> v when v stands in w's way.
	edges := map[*waitNode][]*waitNode{}
	var stuck []*waitNode
	for _, w := range nodes {
		if free[w] {
			continue
		}
		stuck = append(stuck, w)
		for _, bs := range block[w] {
			for _, v := range bs {
				if !free[v] && !slices.Contains(edges[w], v) {
					edges[w] = append(edges[w], v)
				}
			}
		}
	}
	var out []deadlock
	for _, comp := range components(stuck, edges) {
		if len(comp) == 1 && !slices.Contains(edges[comp[0]], comp[0]) {
			continue // waits for a cycle without being in one
		}
		victim := comp[0]
		for _, n := range comp[1:] {
			if younger(n, victim) {
				victim = n
			}
		}
		slices.SortFunc(comp, func(a, b *waitNode) int {
			return cmp.Or(strings.Compare(a.member, b.member), cmp.Compare(a.id, b.id))
		})
		out = append(out, deadlock{victim: victim, cycle: cycleThrough(victim, comp, edges), members: comp})
	}
	return out
}

// components returns the strongly connected components of the graph
// (Tarjan's algorithm), in a deterministic order given nodes' order.
func components(nodes []*waitNode, edges map[*waitNode][]*waitNode) [][]*waitNode {
	index := map[*waitNode]int{}
	low := map[*waitNode]int{}
	onStack := map[*waitNode]bool{}
	var stack []*waitNode
	var out [][]*waitNode
	var visit func(v *waitNode)
	visit = func(v *waitNode) {
		index[v] = len(index)
		low[v] = index[v]
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range edges[v] {
			if _, seen := index[w]; !seen {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var comp []*waitNode
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp = append(comp, w)
				if w == v {
					break
				}
			}
			out = append(out, comp)
		}
	}
	for _, v := range nodes {
		if _, seen := index[v]; !seen {
			visit(v)
		}
	}
	return out
}

// cycleThrough returns a shortest cycle from start back to it within comp
// (breadth first, so the error names as few waits as it can).
func cycleThrough(start *waitNode, comp []*waitNode, edges map[*waitNode][]*waitNode) []*waitNode {
	in := map[*waitNode]bool{}
	for _, n := range comp {
		in[n] = true
	}
	prev := map[*waitNode]*waitNode{}
	queue := []*waitNode{start}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, w := range edges[v] {
			if !in[w] {
				continue
			}
			if w == start {
				cycle := []*waitNode{v}
				for v != start {
					v = prev[v]
					cycle = append(cycle, v)
				}
				slices.Reverse(cycle)
				return cycle
			}
			if _, seen := prev[w]; !seen {
				prev[w] = v
				queue = append(queue, w)
			}
		}
	}
	return []*waitNode{start} // not reached: start is in a cycle of comp
}
