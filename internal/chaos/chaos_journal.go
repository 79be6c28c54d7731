package chaos

import (
	"slices"
	"sync"
	"time"
)

// Journal collects sections, faults and stalls from many goroutines.
type Journal struct {
	mu       sync.Mutex
	sections []Section
	faults   []Fault
	stalls   []Stall
}

// Stall records a stall.
func (j *Journal) Stall(s Stall) {
	j.mu.Lock()
	j.stalls = append(j.stalls, s)
	j.mu.Unlock()
}

// Stalls returns a copy of the stalls recorded so far.
func (j *Journal) Stalls() []Stall {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.stalls)
}

// Record adds a finished section.
func (j *Journal) Record(s Section) {
	j.mu.Lock()
	j.sections = append(j.sections, s)
	j.mu.Unlock()
}

// Fault records a fault of kind that happened at at and hit no session in
// particular (latency, a black hole): it excuses no overlap.
func (j *Journal) Fault(kind string, at time.Time) {
	j.AddFault(Fault{Kind: kind, At: at})
}

// AddFault records f.
func (j *Journal) AddFault(f Fault) {
	j.mu.Lock()
	j.faults = append(j.faults, f)
	j.mu.Unlock()
}

// Sections returns a copy of the sections recorded so far.
func (j *Journal) Sections() []Section {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.sections)
}

// Faults returns a copy of the faults recorded so far.
func (j *Journal) Faults() []Fault {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.faults)
}
