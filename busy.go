package pgcoord

import (
	"sync"
	"time"
)

// busyHint remembers which keys were recently found busy on the server. A
// waiting Acquire of such a key goes straight to a server-side wait, which
// grants at once if the lock is free by then: trying first on a lock session
// would most likely cost a round trip for nothing, on the handoff's critical
// path. The hint expires, so a key that stops being contended goes back to
// the cheaper lock sessions; each expiry costs at most one failed try.
type busyHint struct {
	mu   sync.Mutex
	seen map[int64]int64 // key -> monoNow() when last found busy
}

// busyHintTTL is how long a key found busy counts as contended.
const busyHintTTL = time.Second

// busyHintMax bounds the hint; past it the hint starts over.
const busyHintMax = 4096

func (b *busyHint) init() { b.seen = map[int64]int64{} }

// mark records that key was found busy now.
func (b *busyHint) mark(key int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) >= busyHintMax {
		clear(b.seen)
	}
	b.seen[key] = monoNow()
}

// recent reports whether key was found busy within busyHintTTL.
func (b *busyHint) recent(key int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.seen[key]
	if ok && time.Duration(monoNow()-at) > busyHintTTL {
		delete(b.seen, key)
		ok = false
	}
	return ok
}
