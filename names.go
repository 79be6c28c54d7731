package pgcoord

import (
	"sync"
	"time"
)

// nameCache remembers the names this coordinator has registered in
// pgcoord.locks, so each name costs one registry write per process and
// nameCacheTTL, not one per acquire. It is bounded: a service locking
// ever-new names (one per volume id, say) must not grow without limit.
type nameCache struct {
	mu    sync.Mutex
	names map[int64]cachedName
}

// cachedName is a registered name and when (monoNow) it was registered.
type cachedName struct {
	name string
	at   int64
}

const nameCacheMax = 1 << 16

// nameCacheTTL is how long a registration is trusted before the name is
// registered again, which refreshes its last_used: pruning deletes only
// names unused for at least MinRetention, far longer, so a name in use
// always keeps its registration and collision detection holds.
const nameCacheTTL = 10 * time.Minute

func (n *nameCache) init() { n.names = map[int64]cachedName{} }

// lookup reports whether name's registration for key is known and fresh
// (known), or else the other name this process registered for key within
// nameCacheTTL (other): the registry then owns key for that name, so name
// collides with it. Neither: name is to be registered, and the registry
// decides. A stale entry is no proof of a collision (the other name may
// have been pruned since), so it counts as neither.
func (n *nameCache) lookup(key int64, name string) (known bool, other string) {
	n.mu.Lock()
	got, ok := n.names[key]
	n.mu.Unlock()
	if !ok || time.Duration(monoNow()-got.at) >= nameCacheTTL {
		return false, ""
	}
	if got.name != name {
		return false, got.name
	}
	return true, ""
}

// forget drops every name: the control session reached another server
// (a failover), whose registry may lack rows the old one had (an
// asynchronous standby's replay), so each name registers again on its
// next use (docs/ha.md). Found by a review helper.
func (n *nameCache) forget() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.names)
}

func (n *nameCache) add(key int64, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.names) >= nameCacheMax {
		// Dropping everything is crude but keeps the bound without LRU
		// bookkeeping on the hot path; re-registering is one cheap upsert.
		clear(n.names)
	}
	n.names[key] = cachedName{name: name, at: monoNow()}
}
