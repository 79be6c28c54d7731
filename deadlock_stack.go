package pgcoord

import (
	"bytes"
	"runtime"
	"strconv"
	"strings"
)

// goroutineInfo is what a goroutine dump says of one goroutine: its state
// ("chan receive", "select", "running", ...) and the goroutine that
// created it (0 when unknown).
type goroutineInfo struct {
	state  string
	parent int64
}

// maxGoroutineDump bounds the dump a deadlock check reads: past it, the
// goroutines not in it are unknown, and their holds count for nobody (a
// deadlock through them can be missed, never invented).
const maxGoroutineDump = 16 << 20

// goroutines reads every goroutine's state and creator from a dump of all
// stacks (runtime.Stack). It stops the world for the dump, a few
// microseconds per goroutine: a check runs it once, and only while this
// process has a wait past deadlockTimeout.
func goroutines() map[int64]goroutineInfo {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= maxGoroutineDump {
			return parseGoroutines(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// noteParent records the goroutine that created w's waiter, read from the
// waiter's own stack (no stop of the world): called by the waiter as it
// starts to wait on the server or beyond the budget, so that a check need
// not dump every stack to learn it (see longWaitParams). A stack too deep
// for the buffer leaves it unknown.
func (w *waitWatch) noteParent() {
	if w == nil || w.parentKnown.Load() {
		return
	}
	var buf [4096]byte
	n := runtime.Stack(buf[:], false)
	if n == len(buf) {
		return // truncated: the "created by" line may be cut off
	}
	for id, info := range parseGoroutines(buf[:n]) {
		if id == w.gid {
			w.parentGID.Store(info.parent)
			w.parentKnown.Store(true)
		}
	}
}

// parseGoroutines parses a dump: each goroutine is a header
// "goroutine 12 [chan receive, 2 minutes]:" and, for all but the first
// ones, a line "created by pkg.f in goroutine 7" (Go 1.21 and later).
func parseGoroutines(dump []byte) map[int64]goroutineInfo {
	out := map[int64]goroutineInfo{}
	var id int64
	var info goroutineInfo
	flush := func() {
		if id != 0 {
			out[id] = info
		}
	}
	for len(dump) > 0 {
		line := dump
		if i := bytes.IndexByte(dump, '\n'); i >= 0 {
			line, dump = dump[:i], dump[i+1:]
		} else {
			dump = nil
		}
		switch {
		case bytes.HasPrefix(line, []byte("goroutine ")):
			flush()
			id, info = 0, goroutineInfo{}
			rest := string(line[len("goroutine "):])
			sp := strings.IndexByte(rest, ' ')
			if sp < 0 {
				continue
			}
			id, _ = strconv.ParseInt(rest[:sp], 10, 64)
			state := rest[sp+1:]
			state = strings.TrimPrefix(state, "[")
			if i := strings.IndexAny(state, ",]"); i >= 0 {
				state = state[:i]
			}
			info.state = state
		case bytes.HasPrefix(line, []byte("created by ")):
			if i := bytes.LastIndex(line, []byte(" in goroutine ")); i >= 0 {
				info.parent, _ = strconv.ParseInt(string(line[i+len(" in goroutine "):]), 10, 64)
			}
		}
	}
	flush()
	return out
}

// blockedInProcess reports whether a goroutine in state waits for another
// goroutine of its process (a channel, a select, a mutex, a WaitGroup):
// the state of a goroutine that started a waiter and waits for its result.
// A goroutine running, runnable, asleep, or in a system call or network
// read is working, and will release what it holds by itself.
func blockedInProcess(state string) bool {
	return strings.HasPrefix(state, "chan ") || strings.HasPrefix(state, "select") ||
		strings.HasPrefix(state, "semacquire") || strings.HasPrefix(state, "sync.")
}

// actorGoroutines returns the goroutines whose holds a wait on goroutine
// gid is responsible for: its own, and its creator's while the creator is
// blocked waiting in-process. A test that takes x and starts a goroutine
// to wait for y, then waits for it, holds x while it waits for y as much
// as a goroutine that does both. A creator that works (running, asleep, in
// a system call or a network read) is not waiting: its holds are its own
// and it will release them. Only the creator counts, not its own creator:
// every goroutine descends from main and the test runner, which block on
// channels for good.
func actorGoroutines(gid int64, all map[int64]goroutineInfo) []int64 {
	p := all[gid].parent
	if info, ok := all[p]; p != 0 && ok && blockedInProcess(info.state) {
		return []int64{gid, p}
	}
	return []int64{gid}
}
