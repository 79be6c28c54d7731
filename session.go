package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sessionKind says what a session is for.
type sessionKind int

const (
	// sessionControl runs the heartbeat, the member row and holds the member
	// lock. It also registers lock names, records fencing tokens, and
	// serves the waits beyond the session budget (LISTEN, wait markers,
	// the check for dead holders): it never holds a named lock.
	sessionControl sessionKind = iota
	// sessionLock holds the locks taken without a server-side wait; many per session.
	sessionLock
	// sessionWait waits on the server for one contended lock and then holds
	// it. It never holds any other lock, so cancelling its wait (pgx closes
	// the connection on cancel) costs nobody a hold.
	sessionWait
)

// String names the kind in logs and errors.
func (k sessionKind) String() string {
	return [...]string{"control", "lock", "wait"}[k]
}

// session is one dedicated connection owned by the coordinator, never part of
// any pool. One goroutine uses it at a time (sem). When its connection breaks,
// every hold on it is lost at once, and lock and wait sessions dial again on
// their next use; the control session is redialled by the heartbeat, which
// must also retake the member lock.
type session struct {
	c    *Coordinator
	kind sessionKind
	// sem is a one-slot semaphore: a mutex whose Lock can give up with ctx.
	sem chan struct{}

	// conn is guarded by sem; nil while disconnected.
	conn *pgx.Conn
	// closed is guarded by sem: a closed session never dials again.
	closed bool

	// backendPID is the server backend of conn, asked when it connected.
	backendPID int32
	// identity is the server conn reached, found when it connected
	// (guarded by sem); see onControlServer.
	identity serverIdentity
	// tokenFloor is identity's timeline << 48 (guarded by sem): a try's
	// token candidate at or below it is replaced by RaiseTokenFloor's
	// (see finishToken).
	tokenFloor int64
	// gonePID is guarded by sem: the backend of the connection broken last,
	// which may still hold its locks for a moment (see awaitGone).
	gonePID int32

	// holds is guarded by c.mu.
	holds map[*hold]struct{}
	// raw is the socket of conn, for forceClose.
	raw atomic.Pointer[rawConn]
	// gen numbers the session's connections: dial moves it on, under c.mu.
	// A lease expiry names the connection it ends (expiredGen, guarded by
	// c.mu), so that it never ends a newer one, and no hold is added to a
	// connection once its lease was found run out (see addHold).
	gen        atomic.Uint64
	expiredGen uint64
	// pinging is set while a heartbeat's ping of this session is in flight,
	// so a slow ping is never joined by another.
	pinging atomic.Bool
	// bmu guards batch, the ops queued on a lock session (see lockOp).
	bmu   sync.Mutex
	batch batchQueue
	// running is the batch being run, guarded by sem (see dropForUnlock).
	running []*lockOp

	// listenMu guards listening, set while the control session waits for
	// a notification (see notifier) with a read deadline on its socket.
	// Whoever wants the session meanwhile moves that deadline to now, which
	// ends the wait (a timeout leaves a pgx connection usable); outside
	// the wait nobody may touch the deadline, or a statement would fail.
	listenMu  sync.Mutex
	listening bool
	// wanted counts goroutines waiting for sem of a control session; the
	// listener does not start a wait while it is non-zero.
	wanted atomic.Int32

	// idleSince is when the wait pool last put this session aside unused
	// (monoNow); guarded by the pool's mu.
	idleSince int64

	// heard is when the last statement that succeeded on this connection
	// was sent (nanoseconds on the process's monotonic clock). The server
	// cannot have started counting the session idle before then, so a lease
	// measured from it ends before idle_session_timeout can fire.
	heard atomic.Int64
}

// errControlReconnecting is the error of a statement on the control
// session while the heartbeat's reconnect has yet to replace its broken
// connection (only the reconnect may: it must retake the member lock).
var errControlReconnecting = errors.New("pgcoord: control session is reconnecting")

// monoStart anchors monotonic timestamps that fit in an atomic int64.
var monoStart = time.Now()

func monoNow() int64 { return int64(time.Since(monoStart)) }

func newSession(c *Coordinator, kind sessionKind) *session {
	return &session{c: c, kind: kind, sem: make(chan struct{}, 1), holds: map[*hold]struct{}{}}
}

func (s *session) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	default:
	}
	if s.kind == sessionControl {
		// The holder may be the listener, waiting for a notification for
		// as long as nobody else needs the session: end its wait.
		s.wanted.Add(1)
		defer s.wanted.Add(-1)
		s.interrupt()
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) unlock() { <-s.sem }

// interrupt ends the listener's wait for a notification, if one is under
// way (see listenMu).
func (s *session) interrupt() {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	if s.listening {
		if r := s.raw.Load(); r != nil {
			_ = r.SetReadDeadline(time.Now())
		}
	}
}

// detached runs fn on the session without letting ctx cancel the statement:
// on the control session a cancelled statement would close the connection
// and with it the member lock. The caller stops waiting when ctx ends; the
// statement runs on to its end, bounded by opTimeout.
func (s *session) detached(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	done := make(chan error, 1)
	go func() { done <- s.do(context.WithoutCancel(ctx), fn) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// opTimeout bounds one statement on a session when the caller's ctx has no
// deadline, so a black-holed connection cannot hang an Acquire or Release.
func (c *Coordinator) opTimeout() time.Duration {
	return 5*time.Second + 2*c.cfg.HeartbeatInterval
}

// do runs fn on the session's connection, dialling first where allowed. If
// the connection breaks during fn, the session's holds are reported lost.
func (s *session) do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	return s.doLocked(ctx, fn)
}

func (s *session) doLocked(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	if s.closed {
		return ErrNotStarted
	}
	// A lock session carries many holds, and pgx closes a connection whose
	// statement is cancelled: a caller's cancellation must never cut one
	// short. Its statements (try, unlock) are short and never wait on other
	// sessions, so they are bounded by a deadline on the socket instead of
	// a context: pgx then has no context to watch, which keeps the hot path
	// free of a context, a timer and a watcher per statement.
	bySocket := s.kind == sessionLock
	if bySocket {
		ctx = context.Background()
	} else if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.c.opTimeout())
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		if s.conn != nil && !s.onControlServer() {
			// The control session moved to another server (a failover):
			// this session's server is not the primary any more, and its
			// holds protect nothing. (Its connection is usually dead
			// already; if not, closing it frees its locks there too.)
			s.broken(fmt.Errorf("%w: %w: %s session on %v, the control session on %v", ErrLockLost, ErrWrongServer, s.kind, s.identity, s.c.identity.Load()))
		}
		if s.conn == nil || s.conn.IsClosed() {
			if s.conn != nil {
				s.broken(fmt.Errorf("%w: %s session closed", ErrLockLost, s.kind))
			}
			if !s.mayRedial() {
				return errControlReconnecting
			}
			dctx, cancel := ctx, context.CancelFunc(func() {})
			if bySocket {
				dctx, cancel = context.WithTimeout(ctx, s.c.opTimeout())
			}
			err := s.dial(dctx)
			cancel()
			if err != nil {
				return err
			}
		}
		var raw net.Conn
		if bySocket {
			// A timed-out read fails the statement and pgx closes the
			// connection, as a cancelled context would.
			raw = s.conn.PgConn().Conn()
			_ = raw.SetDeadline(time.Now().Add(s.c.opTimeout()))
		}
		conn := s.conn
		sent := monoNow()
		err := fn(ctx, conn)
		if raw != nil && !conn.IsClosed() {
			_ = raw.SetDeadline(time.Time{})
		}
		if err == nil {
			s.heardAt(sent)
			return nil
		}
		if !conn.IsClosed() {
			return err
		}
		// pgx closes the connection on network errors and on cancellation;
		// either way the server ends the session and with it every lock.
		s.broken(fmt.Errorf("%w: %s session broke: %w", ErrLockLost, s.kind, err))
		// A connection that died while idle (a server restart, an idle
		// timeout) fails the next statement before the server ran it: one
		// retry on a new connection turns that into success. Every statement
		// run here is safe to repeat: one that did run died with its session.
		if attempt > 0 || ctx.Err() != nil {
			return err
		}
		if !s.mayRedial() {
			// The heartbeat's reconnect replaces it (see onControl).
			return fmt.Errorf("%w: %w", errControlReconnecting, err)
		}
	}
}

// mayRedial reports whether do may replace a dead connection itself. The
// control session may only until it holds the member lock: after that a new
// connection must retake it, which is the heartbeat's reconnect's job. (Start
// can take longer than SessionTimeout, a first migration say, and the
// server ends sessions idle that long.)
func (s *session) mayRedial() bool {
	return s.kind != sessionControl || !s.c.registered.Load()
}

// heardAt records that a statement sent at t succeeded; heard only moves
// forward.
func (s *session) heardAt(t int64) {
	for {
		old := s.heard.Load()
		if t <= old || s.heard.CompareAndSwap(old, t) {
			return
		}
	}
}

// connect dials now (Start opens the control session and one lock session
// up front so that bad settings fail Start, not the first Acquire).
func (s *session) connect(ctx context.Context) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	if s.conn != nil && !s.conn.IsClosed() {
		return nil
	}
	return s.dial(ctx)
}

// dial opens the connection; called with sem held.
func (s *session) dial(ctx context.Context) (err error) {
	if s.kind != sessionControl {
		defer func() {
			if err != nil {
				// A caller waits for a session, and the server is gone or
				// is not the control session's: a reconnect of the
				// control session under way should try now.
				s.c.reconnectSoon()
			}
		}()
	}
	if err := s.c.admit(ctx, s); err != nil {
		return err
	}
	base := s.c.connConfig
	if s.kind == sessionControl {
		// Notifications arrive during any statement on the session, not
		// only while the listener waits for one.
		base = base.Copy()
		base.OnNotification = s.c.notifier.notified
	}
	conn, err := s.c.hooks.dial(ctx, base, s.c.sessionTag)
	if err != nil {
		// pgconn's errors name host, user and database, never the password.
		err = tooManyConnections(err)
		if errors.Is(err, ErrTooManyConnections) {
			s.c.stats.refusedSessions.Add(1)
		}
		return fmt.Errorf("pgcoord: connecting %s session: %w", s.kind, err)
	}
	// One round trip says which backend and which server this is (and
	// bounds the session); a standby, or a server other than the control
	// session's, is refused.
	row, err := s.prepare(ctx, conn)
	if err == nil {
		err = s.c.checkServer(s.kind, conn, row)
	}
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		if errors.Is(err, ErrWrongServer) {
			return err
		}
		return fmt.Errorf("pgcoord: preparing %s session: %w", s.kind, err)
	}
	pid, id := row.pid, row.identity
	if s.gonePID != 0 && s.gonePID != pid && id == s.identity {
		// (On another server, after a failover, that pid is nobody of ours.)
		s.awaitGone(ctx, conn, s.gonePID)
	}
	if s.kind == sessionControl {
		if old := s.c.identity.Load(); old != nil && *old != id {
			s.c.log.Warn("pgcoord: the control session is on another server now (a failover?); every other session follows it, and their holds are lost",
				"was", old.String(), "now", id.String())
		}
		s.c.identity.Store(&id)
	}
	s.identity = id
	s.tokenFloor = int64(id.timeline) << 48
	s.gonePID = 0
	s.backendPID = pid
	s.conn = conn
	s.heardAt(monoNow())
	s.c.mu.Lock()
	gen := s.gen.Add(1)
	s.c.mu.Unlock()
	s.raw.Store(&rawConn{conn.PgConn().Conn(), gen})
	return nil
}

// awaitGoneMax bounds awaitGone: a backend normally finishes exiting within
// milliseconds; one that has not in this long is not exiting (a cut-off
// session the server has yet to notice) and will free its locks when its
// timeouts fire, so there is no point delaying the new session further.
const awaitGoneMax = time.Second

// awaitGone waits until the broken connection's old backend, pid, holds no
// advisory lock. A client sees a terminated session end (the server's FATAL
// message, then EOF) before the backend has finished exiting and released
// its locks; without this, a holder told of its loss that at once tried its
// lock again would find it still held by its own dead session.
func (s *session) awaitGone(ctx context.Context, conn *pgx.Conn, pid int32) {
	// The bound is a deadline checked between statements, not a context on
	// them: pgx closes a connection whose statement is cancelled, and this
	// one is the session's new connection.
	deadline := time.Now().Add(awaitGoneMax)
	pause := time.Millisecond
	for {
		holds, err := s.c.q.BackendHoldsLocks(ctx, simpleProtocol{conn}, pid)
		if err != nil || !holds || time.Now().Add(pause).After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// rawConn boxes a net.Conn for an atomic pointer, with the generation of
// the session's connection it belongs to.
type rawConn struct {
	net.Conn
	gen uint64
}

// forceClose closes the socket of connection gen (0: whichever is current)
// without the session's sem: for a session whose lease ran out while a
// statement on it may hang, or that Stop must close whatever it is doing.
// The statement then fails and its caller sees a broken connection, and the
// server, seeing the socket closed, ends the session and frees its locks.
func (s *session) forceClose(gen uint64) {
	if r := s.raw.Load(); r != nil && (gen == 0 || r.gen == gen) {
		_ = r.Close()
	}
}

// prepare runs the one statement that prepares a new connection: which
// backend and server it is (SessionIdentity) and the bounds that free its
// locks when its client goes silent (PrepareSession: idle_session_timeout,
// PostgreSQL 14+, see Config.SessionTimeout). The control session is
// bounded too: after a partition its old server session must not keep the
// member lock (and so block the reconnect) for as long as TCP takes to
// give up.
func (s *session) prepare(ctx context.Context, conn *pgx.Conn) (sessionFound, error) {
	q := simpleProtocol{conn}
	if !s.c.canBoundIdle(conn) {
		row, err := s.c.q.SessionIdentity(ctx, q)
		if err != nil {
			return sessionFound{}, fmt.Errorf("pgcoord: asking the server who it is: %w", err)
		}
		return found(row.Pid, row.InRecovery, row.SystemID, row.WalFile)
	}
	ms := strconv.FormatInt(s.c.cfg.SessionTimeout.Milliseconds(), 10)
	row, err := s.c.q.PrepareSession(ctx, q, ms)
	if err != nil {
		return sessionFound{}, fmt.Errorf("pgcoord: asking the server who it is and setting idle_session_timeout and tcp_user_timeout: %w", err)
	}
	return found(row.Pid, row.InRecovery, row.SystemID, row.WalFile)
}

// canBoundIdle reports whether the server can end idle sessions
// (idle_session_timeout, PostgreSQL 14+), warning once when it cannot.
func (c *Coordinator) canBoundIdle(conn *pgx.Conn) bool {
	version := conn.PgConn().ParameterStatus("server_version")
	if serverMajor(version) >= 14 {
		return true
	}
	c.warnOldServer.Do(func() {
		c.log.Warn("pgcoord: PostgreSQL before 14 has no idle_session_timeout; a frozen holder keeps its locks until TCP gives up",
			"server_version", version)
	})
	return false
}

// serverMajor returns the major version in a server_version parameter such
// as "15.18 (Debian 15.18-0+deb12u1)" or "14beta1"; 0 when unreadable. (The
// server does not report server_version_num at connection start.)
func serverMajor(version string) int {
	end := 0
	for end < len(version) && version[end] >= '0' && version[end] <= '9' {
		end++
	}
	major, _ := strconv.Atoi(version[:end])
	return major
}

// broken drops the connection and reports every hold on it lost; called with
// sem held.
func (s *session) broken(cause error) {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.conn.Close(ctx)
		cancel()
		s.c.trackCleanup(s.conn.PgConn().CleanupDone())
		s.gonePID = s.backendPID
		s.conn = nil
		s.raw.Store(nil)
		if s.kind == sessionControl {
			// Reconnect now, not at the next beat: until the control
			// session is back, no name can be registered (a failover's
			// new primary waits for it).
			s.c.beatSoon()
		}
	}
	s.c.loseHolds(s, cause)
	s.loseQueuedAsync(cause)
}

// loseQueuedAsync reports the holds whose asynchronous unlock (see
// Config.AsyncRelease) is still queued on s, or in the batch being run, as
// lost late: their Release returned, so loseHolds no longer sees them, but
// their locks went with the connection before the unlock ran. Telling them
// now, rather than once the unlock has run on the next connection (which
// first waits for the old backend to exit, up to a second), keeps the signal
// within the bound of a loss that Release could have reported. Called with
// sem held.
func (s *session) loseQueuedAsync(cause error) {
	s.bmu.Lock()
	var late []*lockOp
	for _, op := range s.batch.queue {
		if op.async {
			late = append(late, op)
		}
	}
	s.bmu.Unlock()
	for _, op := range s.running {
		if op.async {
			late = append(late, op)
		}
	}
	for _, op := range late {
		s.c.lostLate(op.h, fmt.Errorf("%w: the session of %q broke before its asynchronous unlock ran: %w", ErrLockLost, op.h.lock.full, cause))
	}
}

// pingSkip is how recently a session must have been heard from for the
// heartbeat to skip its ping: a session answering other statements is
// alive, and far from the server's idle_session_timeout. Half an interval
// keeps a death found within two intervals (the next beat pings it).
func (c *Coordinator) pingSkip() time.Duration { return c.cfg.HeartbeatInterval / 2 }

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
// for the pings of the beat it asked for.
func (s *session) check(asked *sync.WaitGroup) {
	if s.kind != sessionControl {
		s.checkLease()
	}
	if time.Duration(monoNow()-s.heard.Load()) < s.c.pingSkip() {
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
// the socket's deadline fails it, pgx closes the connection, and its holds
// are reported lost, within two intervals of the cut. The bound is a
// deadline on the socket, not a context, so that Stop, which ends the
// heartbeat's context, cannot cut a ping short: pgx would close the
// connection in the background, and the server would free its locks a
// moment after Stop returned instead of before.
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
	raw := conn.PgConn().Conn()
	_ = raw.SetDeadline(time.Now().Add(s.c.cfg.HeartbeatInterval))
	sent := monoNow()
	err := conn.Ping(context.Background())
	if !conn.IsClosed() {
		_ = raw.SetDeadline(time.Time{})
	}
	switch {
	case err == nil:
		s.heardAt(sent)
	case conn.IsClosed():
		s.broken(fmt.Errorf("%w: %s session failed its check: %w", ErrLockLost, s.kind, err))
	}
}

// close releases the session's locks (signalling their loss first, so no
// holder learns of it after someone else got the lock), closes the
// connection and keeps the session from dialling again. It closes the
// session whatever ctx says: when ctx ends while a statement holds the
// session, the socket is closed under it (so the statement fails at once)
// and the polite unlock is skipped.
//
// It returns the backend pid whose exit frees this session's locks when
// they were not released by a statement here (0 when they were, or there
// were none): the server frees a session's locks only once its backend has
// exited, a moment after the client saw the connection end, so Stop waits
// for that pid to hold nothing before it returns.
func (s *session) close(ctx context.Context, cause error) (exiting int32, err error) {
	if s.lock(ctx) != nil {
		s.forceClose(0)
		s.sem <- struct{}{}
	}
	defer s.unlock()
	s.closed = true
	s.stopFlush()
	s.c.loseHolds(s, cause)
	if s.conn == nil {
		return s.gonePID, nil
	}
	exiting = s.backendPID
	if s.kind != sessionControl && !s.conn.IsClosed() && ctx.Err() == nil {
		// Closing alone would free the locks too, but only once the server
		// notices; unlocking first makes them free when Stop returns.
		err = s.c.q.UnlockAll(ctx, s.conn)
		switch {
		case err == nil:
			exiting = 0
		case s.conn.IsClosed():
			// The session was already dead (an idle timeout, a restart):
			// its locks went with it, and there is nothing to release.
			err = nil
		}
	}
	_ = s.conn.Close(ctx)
	s.conn = nil
	s.raw.Store(nil)
	if err != nil {
		return exiting, fmt.Errorf("pgcoord: releasing locks of %s session: %w", s.kind, err)
	}
	return exiting, nil
}

// simpleProtocol runs sqlc's queries with PostgreSQL's simple protocol. The
// statements run while a session connects use it: they need no prepared
// statement, so they work (and can tell what is wrong) even through a
// transaction-pooling proxy, where a statement prepared in one transaction
// is gone in the next.
type simpleProtocol struct{ conn *pgx.Conn }

// Exec runs sql with the simple protocol.
func (s simpleProtocol) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return s.conn.Exec(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
}

// Query runs sql with the simple protocol.
func (s simpleProtocol) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return s.conn.Query(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
}

// QueryRow runs sql with the simple protocol.
func (s simpleProtocol) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return s.conn.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
}
