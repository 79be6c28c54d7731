package pgcoord

// BackendPID returns the server process id of the session on which this
// leadership is held (0 when not leader), to find the term's hold in
// pg_locks, pg_stat_activity or pgcoord.held_locks.
func (e *Election) BackendPID() int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil {
		return 0
	}
	return e.term.h.pid
}
