package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// backend owns one backend connection of the coordinator, whatever it is
// for: it dials, prepares the connection and checks its server in one
// statement, keeps the lease's clock (when a statement last sent on it
// succeeded), pings, closes the socket under a hung statement, and numbers
// its connections (generations). It knows nothing of holds, batches or
// waits: the session built on it (session.go) does, one role per kind
// (control.go, batch.go, wait.go).
//
// Every field but c and kind is guarded by the owning session's sem, except
// those said to be atomic.
type backend struct {
	c    *Coordinator
	kind sessionKind
	// notify is the connection's OnNotification (the control session's
	// listener); nil for the others.
	notify pgconn.NotificationHandler

	// conn is nil while disconnected.
	conn *pgx.Conn
	// backendPID is the server backend of conn, asked when it connected.
	backendPID int32
	// identity is the server conn reached, found when it connected; see
	// onControlServer.
	identity serverIdentity
	// tokenFloor is identity's timeline << 48: a try's token candidate at
	// or below it is replaced by RaiseTokenFloor's (see finishToken).
	tokenFloor int64
	// gonePID is the backend of the connection broken last, which may still
	// hold its locks for a moment (see awaitGone).
	gonePID int32

	// raw is the socket of conn, for forceClose (atomic: read without sem).
	raw atomic.Pointer[rawConn]
	// gen numbers the connections: open moves it on, under c.mu. A lease
	// expiry names the connection it ends (expiredGen, guarded by c.mu), so
	// that it never ends a newer one, and no hold is added to a connection
	// once its lease was found run out (see addHold).
	gen        atomic.Uint64
	expiredGen uint64
	// heard is when the last statement that succeeded on this connection
	// was sent (nanoseconds on the process's monotonic clock). The server
	// cannot have started counting the session idle before then, so a lease
	// measured from it ends before idle_session_timeout can fire.
	heard atomic.Int64
	// stmtSent is when the statement doLocked is running was sent
	// (monoNow), guarded by sem: a grant it reads is good only while that
	// send is within the lease (see addHold).
	stmtSent int64
	// pinging is set while a heartbeat's ping of this connection is in
	// flight, so a slow ping is never joined by another.
	pinging atomic.Bool
	// hot is the hot statements' state on conn (hot.go), cleared with it
	// so that a dropped connection is not kept from the collector.
	hot hotConn
}

// monoStart anchors monotonic timestamps that fit in an atomic int64.
var monoStart = time.Now()

func monoNow() int64 { return int64(time.Since(monoStart)) }

// heardAt records that a statement sent at t succeeded; heard only moves
// forward.
func (b *backend) heardAt(t int64) {
	for {
		old := b.heard.Load()
		if t <= old || b.heard.CompareAndSwap(old, t) {
			return
		}
	}
}

// open dials the connection, prepares it (one round trip: which backend
// and server, and the bounds of a silent session) and checks the server;
// called with the session's sem held. ctx bounds the dial and the
// preparing statement; redial says the dial is not Start's (see
// dialSession).
func (b *backend) open(ctx context.Context, redial bool) error {
	c := b.c
	base := c.connConfig
	if b.notify != nil {
		// Notifications arrive during any statement on the connection,
		// not only while the listener waits for one.
		base = base.Copy()
		base.OnNotification = b.notify
	}
	conn, err := c.dialSession(ctx, base, b.kind, redial)
	if err != nil {
		// pgconn's errors name host, user and database, never the password.
		err = tooManyConnections(err)
		if errors.Is(err, ErrTooManyConnections) {
			c.stats.refusedSessions.Add(1)
		}
		return &dialError{kind: b.kind, err: err}
	}
	// One round trip says which backend and which server this is (and
	// bounds the session); a standby, or a server other than the control
	// session's, is refused.
	sent := monoNow()
	row, err := b.prepare(ctx, conn)
	if err == nil {
		err = c.checkServer(b.kind, conn, row)
		if err != nil && c.controlBehind(b.kind, row) {
			err = c.awaitControl(ctx, b.kind, conn, row)
		}
	}
	if err == nil && b.kind == sessionControl {
		err = c.prepareControl(ctx, conn)
	}
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		if errors.Is(err, ErrWrongServer) {
			return err
		}
		return fmt.Errorf("pgcoord: preparing %s session: %w", b.kind, err)
	}
	pid, id := row.pid, row.identity
	if b.gonePID != 0 && b.gonePID != pid && id == b.identity {
		// (On another server, after a failover, that pid is nobody of ours.)
		b.awaitGone(ctx, conn, b.gonePID)
	}
	if b.kind == sessionControl {
		if old := c.identity.Load(); old != nil && *old != id {
			c.log.Warn("pgcoord: the control session is on another server now (a failover?); every other session follows it, and their holds are lost",
				"was", old.String(), "now", id.String())
			c.names.forget()
		}
		c.identity.Store(&id)
	}
	b.identity = id
	b.tokenFloor = int64(id.timeline) << 48
	b.gonePID = 0
	b.backendPID = pid
	b.conn = conn
	// The lease runs from the preparing statement's send, the last one
	// before any wait for the control session (awaitControl).
	b.heardAt(sent)
	c.mu.Lock()
	gen := b.gen.Add(1)
	c.mu.Unlock()
	b.raw.Store(&rawConn{conn.PgConn().Conn(), gen})
	return nil
}

// drop closes the connection (a broken one, or one that must not be
// trusted) and remembers its backend, whose exit frees its locks (see
// awaitGone). It reports whether there was a connection to drop.
func (b *backend) drop() bool {
	if b.conn == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = b.conn.Close(ctx)
	cancel()
	b.c.trackCleanup(b.conn.PgConn().CleanupDone())
	b.gonePID = b.backendPID
	b.conn = nil
	b.hot = hotConn{}
	b.raw.Store(nil)
	return true
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
func (b *backend) awaitGone(ctx context.Context, conn *pgx.Conn, pid int32) {
	// The bound is a deadline checked between statements, not a context on
	// them: pgx closes a connection whose statement is cancelled, and this
	// one is the session's new connection.
	deadline := time.Now().Add(awaitGoneMax)
	pause := time.Millisecond
	for {
		holds, err := b.c.q.BackendHoldsLocks(ctx, simpleProtocol{conn}, pid)
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
// the connection it belongs to.
type rawConn struct {
	net.Conn
	gen uint64
}

// forceClose closes the socket of connection gen (0: whichever is current)
// without the session's sem: for a connection whose lease ran out while a
// statement on it may hang, or that Stop must close whatever it is doing.
// The statement then fails and its caller sees a broken connection, and the
// server, seeing the socket closed, ends the session and frees its locks.
func (b *backend) forceClose(gen uint64) {
	if r := b.raw.Load(); r != nil && (gen == 0 || r.gen == gen) {
		_ = r.Close()
	}
}

// pingConn sends an empty statement, bounded by a deadline on the socket
// of one heartbeat interval, not by a context: Stop, which ends the
// heartbeat's context, must not cut a ping short (pgx would close the
// connection in the background, and the server would free its locks a
// moment after Stop returned instead of before). Called with sem held, on
// an open connection; a ping that fails leaves the connection closed.
//
// The deadline is pingBound's.
func (b *backend) pingConn() error {
	conn := b.conn
	raw := conn.PgConn().Conn()
	bound := pingBound(time.Duration(monoNow()-b.heard.Load()), b.c.cfg.HeartbeatInterval, b.c.pingSkip())
	_ = raw.SetDeadline(time.Now().Add(bound))
	sent := monoNow()
	err := conn.Ping(context.Background())
	if !conn.IsClosed() {
		_ = raw.SetDeadline(time.Time{})
	}
	if err == nil {
		b.heardAt(sent)
	}
	return err
}

// pingBound is how long a ping sent now may take before the session counts
// as cut off, the session last heard sinceHeard ago: one interval, except
// for a session heard more than an interval ago but less than an interval
// and skip ago. The beat before skipped that session's ping (see check), or
// this beat is late: its ping is given only until two intervals after the
// session was heard, so that a cut just after that statement is told
// within two heartbeats, as promised. With a whole interval it was told up
// to an interval and a quarter plus the ping's interval after the cut (a
// review helper measured 2.2 heartbeats, the backend SIGSTOPped just after
// a statement). The ping still gets at least an interval less skip. A
// session heard longer ago was busy at the beat before (or its ping was in
// flight): its statement was answered after that beat, so a cut came after
// it, and a whole interval is within the bound. (A beat later than skip
// keeps a whole interval too: shortening its ping further would count a
// slow answer as a cut.)
func pingBound(sinceHeard, interval, skip time.Duration) time.Duration {
	if late := sinceHeard - interval; late > 0 && late < skip {
		return interval - late
	}
	return interval
}

// prepare runs the one statement that prepares a new connection: which
// backend and server it is (SessionIdentity) and the bounds that free its
// locks when its client goes silent (PrepareSession: idle_session_timeout,
// PostgreSQL 14+, see Config.SessionTimeout). The control session is
// bounded too: after a partition its old server session must not keep the
// member lock (and so block the reconnect) for as long as TCP takes to
// give up.
func (b *backend) prepare(ctx context.Context, conn *pgx.Conn) (sessionFound, error) {
	c := b.c
	q := simpleProtocol{conn}
	if !c.canBoundIdle(conn) {
		row, err := c.q.SessionIdentity(ctx, q)
		if err != nil {
			return sessionFound{}, fmt.Errorf("pgcoord: asking the server who it is: %w", err)
		}
		if row.Reused {
			return sessionFound{}, c.reusedBackend(ctx, conn)
		}
		return found(row.Pid, row.InRecovery, row.SystemID, row.WalFile)
	}
	ms := strconv.FormatInt(c.cfg.SessionTimeout.Milliseconds(), 10)
	row, err := c.q.PrepareSession(ctx, q, ms)
	if err != nil {
		return sessionFound{}, fmt.Errorf("pgcoord: asking the server who it is and setting idle_session_timeout and tcp_user_timeout: %w", err)
	}
	if row.Reused {
		return sessionFound{}, c.reusedBackend(ctx, conn)
	}
	return found(row.Pid, row.InRecovery, row.SystemID, row.WalFile)
}

// reusedBackend refuses the server session conn reached, which another
// client used before (it has prepared statements, or holds advisory locks,
// as no new session does). A pooler in session mode that does not reset
// server sessions between clients (PgBouncer with server_reset_query
// empty) hands on the locks of a client that left, its own session's
// included: a lock session dialled again got back the server session it
// had just left, still holding the lock it had been told it lost, and every
// statement failed with "prepared statement already exists"
// (TestPgBouncerWithoutResetLeavesNoLock). Once the coordinator runs, Start
// has ruled out a transaction-pooling proxy, so the server session is this
// client's alone: it is ended, which frees what it holds as the missing
// reset would have (closing only the client connection would put it back
// in the pool for the next dial). During Start, a transaction-pooling proxy
// looks the same (its server sessions carry other clients' statements and
// locks) and a server session there is shared: it is refused, not ended.
func (c *Coordinator) reusedBackend(ctx context.Context, conn *pgx.Conn) error {
	const used = "the server session was used by another client before (it has prepared statements or holds advisory locks, which a new session never has)"
	const reset = "a pooler in session mode must reset server sessions between clients (PgBouncer: server_reset_query = DISCARD ALL, its default)"
	if !c.running() {
		return fmt.Errorf("%w: %s: either %s, or %s", ErrSessionLocksUnsupported, used, poolerAdvice, reset)
	}
	_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`, pgx.QueryExecModeSimpleProtocol)
	return fmt.Errorf("%w: %s: %s; the server session was ended, which frees what it held", ErrSessionLocksUnsupported, used, reset)
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

// dialError is a session's failure to connect (the server refused or did
// not answer in time): no statement ran, so a wait whose wait session could
// not be opened can wait beyond the budget instead (see wait).
type dialError struct {
	kind sessionKind
	err  error
}

func (e *dialError) Error() string {
	return fmt.Sprintf("pgcoord: connecting %s session: %v", e.kind, e.err)
}

func (e *dialError) Unwrap() error { return e.err }
