package pgcoord

import "sync"

// background counts the goroutines a coordinator starts on a caller's
// behalf that may outlive the call: a statement on the control session
// that its caller stopped waiting for (see session.detached), a batch of
// lock-session statements led by a goroutine of its own (see
// session.passLead). Stop waits for them after closing the sessions (which
// makes whatever they still do fail at once), so that nothing the
// coordinator started outlives Stop. A sync.WaitGroup would not do: its Add
// may not race with its Wait, and these start whenever a caller calls.
type background struct {
	mu      sync.Mutex
	n       int
	stopped bool
	idle    *sync.Cond
}

// start counts one goroutine about to start and reports whether it may:
// false once Stop has begun waiting.
func (b *background) start() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	b.n++
	return true
}

// done ends a goroutine counted by start.
func (b *background) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n--
	if b.n == 0 && b.idle != nil {
		b.idle.Broadcast()
	}
}

// stop refuses new goroutines and waits for those running.
func (b *background) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.idle == nil {
		b.idle = sync.NewCond(&b.mu)
	}
	for b.n > 0 {
		b.idle.Wait()
	}
}
