package main

// The fleet's tail (run -tail N): which waits were longest, when they
// began, and whether a name stalled (granted to nobody for seconds) or its
// waits were overtaken, to tell a stuck queue from an unfair one.

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// longWait is one granted wait: how long, when it began, its name and its
// coordinator (proc-index; the process alone in the baseline).
type longWait struct {
	Wait  time.Duration `json:"wait"`
	Began time.Duration `json:"began"` // since the run's start
	Name  int           `json:"name"`
	Coord string        `json:"coord"`
}

// longWaitMin is the shortest wait a child lists in childResult.Long.
const longWaitMin = time.Second

// recordGrant counts a grant by name and second (childResult.Grants) and
// lists a wait of at least longWaitMin (childResult.Long).
func (w *worker) recordGrant(l longWait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sec := int((l.Began + l.Wait) / time.Second)
	if sec >= 0 {
		if w.r.Grants == nil {
			w.r.Grants = map[int][]int{}
		}
		g := w.r.Grants[l.Name]
		for len(g) <= sec {
			g = append(g, 0)
		}
		g[sec]++
		w.r.Grants[l.Name] = g
	}
	if l.Wait >= longWaitMin {
		w.r.Long = append(w.r.Long, l)
	}
}

// printTail prints the n longest of long, and how many long waits began in
// each second of the run.
func printTail(mode string, long []longWait, n int, grants map[int][]int, secs int) {
	slices.SortFunc(long, func(a, b longWait) int { return int(b.Wait - a.Wait) })
	fmt.Printf("%s: %d waits of %v or more\n", mode, len(long), longWaitMin)
	for i, l := range long[:min(n, len(long))] {
		fmt.Printf("%s: longest #%d: %s, began %s into the run, name %d, coordinator %s\n",
			mode, i+1, fmtDur(l.Wait), fmtDur(l.Began), l.Name, l.Coord)
	}
	perSec := map[int]int{}
	for _, l := range long {
		perSec[int(l.Began/time.Second)]++
	}
	var b strings.Builder
	for _, s := range slices.Sorted(maps.Keys(perSec)) {
		fmt.Fprintf(&b, " %ds:%d", s, perSec[s])
	}
	fmt.Printf("%s: long waits by the second they began in:%s\n", mode, b.String())
	byName := map[int]int{}
	for _, l := range long {
		byName[l.Name]++
	}
	names := slices.Collect(maps.Keys(byName))
	slices.SortFunc(names, func(a, b int) int { return byName[b] - byName[a] })
	for _, name := range names[:min(5, len(names))] {
		fmt.Printf("%s: name %d: %d long waits; grants by second: %v\n", mode, name, byName[name], grants[name])
	}
	// A name granted to nobody for seconds while others wait is a stall,
	// not a queue: the longest such streaks.
	streak := map[int]int{}
	for name, g := range grants {
		run := 0
		for i := range secs {
			if i < len(g) && g[i] > 0 {
				run = 0
				continue
			}
			run++
			streak[name] = max(streak[name], run)
		}
	}
	snames := slices.Collect(maps.Keys(streak))
	slices.SortFunc(snames, func(a, b int) int { return streak[b] - streak[a] })
	for _, name := range snames[:min(3, len(snames))] {
		fmt.Printf("%s: name %d: no grant for %d s in a row; grants by second: %v\n", mode, name, streak[name], grants[name])
	}
	var all []int
	for _, g := range grants {
		for i, n := range g {
			for len(all) <= i {
				all = append(all, 0)
			}
			all[i] += n
		}
	}
	fmt.Printf("%s: all names: grants by second: %v\n", mode, all)
}

// addGrants adds a child's grants by name and second to sum.
func addGrants(sum, child map[int][]int) {
	for name, g := range child {
		s := sum[name]
		for len(s) < len(g) {
			s = append(s, 0)
		}
		for i, n := range g {
			s[i] += n
		}
		sum[name] = s
	}
}
