package pgcoord

import (
	"fmt"
	"sync"
	"time"
)

// The heartbeat's look at a lock or wait session (see heartbeat.go): its
// lease, then a ping unless it was heard from lately or is busy.

// pingSkip is how recently a session must have been heard from for the
// heartbeat to skip its ping: a session answering other statements is
// alive, and far from the server's idle_session_timeout. The skip delays
// finding a death: a session killed just after it was last heard, and
// skipped by the beat that follows, is pinged by the next one, up to an
// interval plus pingSkip after the kill. A quarter of an interval keeps
// that well within the two intervals promised, with room for a loaded
// machine to schedule the ping and read its answer (make chaos, under
// -race on two cores, has goroutines wait over 200 ms for a CPU); a busy
// lock session is heard far more often than that and is still not
// pinged.
func (c *Coordinator) pingSkip() time.Duration { return c.cfg.HeartbeatInterval / 4 }

// check is the heartbeat's look at a lock or wait session: its lease first,
// then a ping, which confirms that the session still has its locks (a
// failed ping means they are gone) and keeps it from the server's
// idle_session_timeout. check never waits for the session: the ping runs in
// a goroutine of its own (at most one per session), and a session busy
// with a statement is not pinged at all, since that statement will either
// be heard or find the break (or, if it hangs on a dead network, the lease
// ends it). So a busy session is never taken for a silent one, and a slow
// ping never delays the next beat's lease checks.
//
// A ping started is also counted in asked, when not nil: Heartbeat waits
// for the pings of the beat it asked for. force pings a session however
// recently it was heard (see checkSoon).
func (s *session) check(asked *sync.WaitGroup, force bool) {
	if s.kind != sessionControl {
		s.checkLease()
	}
	if !force && time.Duration(monoNow()-s.heard.Load()) < s.c.pingSkip() {
		return
	}
	if !s.pinging.CompareAndSwap(false, true) {
		return
	}
	s.c.pings.Add(1)
	if asked != nil {
		asked.Add(1)
	}
	go func() {
		defer s.c.pings.Done()
		if asked != nil {
			defer asked.Done()
		}
		defer s.pinging.Store(false)
		s.ping()
	}()
}

// ping sends an empty statement on the session unless it is in use. A ping
// not answered within one heartbeat interval of being sent (never counting
// a wait for the session: it does not wait) means the session is cut off:
// the socket's deadline fails it (see pingConn), pgx closes the connection,
// and its holds are reported lost, within two intervals of the cut.
func (s *session) ping() {
	select {
	case s.sem <- struct{}{}:
	default:
		return // in use: see check
	}
	defer s.unlock()
	if s.conn == nil || s.closed {
		return
	}
	conn := s.conn
	if conn.IsClosed() {
		s.broken(fmt.Errorf("%w: %s session closed", ErrLockLost, s.kind))
		return
	}
	if !s.onControlServer() {
		s.broken(fmt.Errorf("%w: %w: %s session on %v, the control session on %v", ErrLockLost, ErrWrongServer, s.kind, s.identity, s.c.identity.Load()))
		return
	}
	if err := s.pingConn(); err != nil && conn.IsClosed() {
		s.broken(fmt.Errorf("%w: %s session failed its check: %w", ErrLockLost, s.kind, err))
	}
}
