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

func (n *nameCache) known(key int64, name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	got, ok := n.names[key]
	return ok && got.name == name && time.Duration(monoNow()-got.at) < nameCacheTTL
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
