package pgcoord

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of Config: New puts them in the fields left at zero.
const (
	// DefaultHeartbeatInterval is Config.HeartbeatInterval's default.
	DefaultHeartbeatInterval = time.Second
	// DefaultInitialReconnectBackoff is Config.InitialReconnectBackoff's
	// default.
	DefaultInitialReconnectBackoff = 100 * time.Millisecond
	// DefaultMaxReconnectBackoff is Config.MaxReconnectBackoff's default.
	DefaultMaxReconnectBackoff = 60 * time.Second
	// DefaultMaxSessions is Config.MaxSessions's default: the control
	// session, the lock session and two wait sessions.
	DefaultMaxSessions = 4
	// DefaultMaxHeldLocks is Config.MaxHeldLocks's default.
	DefaultMaxHeldLocks = 4000
)

// maxSessionsLimit is the largest MaxSessions accepted: more than a
// coordinator can use (waits beyond the budget cost nothing), and few
// enough that a typo cannot take a server's connection slots.
const maxSessionsLimit = 1024

// lockSessions is how many sessions hold the locks taken without a wait.
// One: a lock session batches concurrent statements into one round trip,
// so more rarely paid, and every backend of a dead member must exit before
// the server is done with it (SIGKILL takeover p99: 25 ms with four lock
// sessions open, 14 ms with one). The code keeps a slice of them (a name
// always on the same one) should that change.
const lockSessions = 1

// Config configures a Coordinator. Every field is optional except one of
// ConnString and Pool: New fills the others with their defaults and
// returns an error wrapping ErrInvalidConfig, naming the field, for a value
// it cannot use.
type Config struct {
	// ConnString is a pgx connection string (URL or key=value; PG* environment
	// variables apply). Either ConnString or Pool is required. Without a
	// connect_timeout in it (or PGCONNECT_TIMEOUT), each connection attempt
	// is bounded by DefaultConnectTimeout (10s), also with Pool. A session
	// opened again after Start (for a caller, or the control session's
	// reconnect) first gives an attempt 250ms, tries again at once after
	// one that used its time up, and gives the attempts longer as they keep
	// failing so, up to that bound: a connection held by a proxy routing to
	// a node that is down is given up and made again.
	ConnString string
	// Pool supplies the connection settings instead of ConnString, so an app
	// can reuse its pool's configuration. What it gives: a copy of the pool's
	// ConnConfig (host, user, password, TLS, runtime parameters, pgconn
	// hooks, tracer) and its BeforeConnect and AfterConnect hooks, run around
	// every session pgcoord opens (BeforeConnect may change the copy, say to
	// set a fresh token as password; application_name is set after it). What
	// it does not give: connections. The coordinator opens its own dedicated
	// sessions and never borrows a pooled connection, since pgxpool would hand
	// one still holding session locks to the next borrower; so MaxConns,
	// MinConns and the health checks do not bound or touch pgcoord's sessions
	// (at most MaxSessions backends, 4 by default, besides the pool's),
	// and the hooks about lending connections (BeforeAcquire, AfterRelease,
	// PrepareConn, BeforeClose) are not run. Closing the pool does not stop
	// the coordinator.
	Pool *pgxpool.Pool
	// AgentID identifies this agent. Default: a random UUID, which is what
	// most services want. The member id Prefix+AgentID belongs to one
	// running process (a second Start with a live member's id fails with
	// ErrMemberExists), so a plain hostname fails the second process on a
	// host; use hostname plus pid for a readable id, and a fixed id only
	// when exactly one process may run under it. Sessions show the member
	// id in pg_stat_activity's application_name ("pgcoord:" + id, cut to
	// fit, + "#" + a short hash).
	AgentID string
	// Prefix is prepended to AgentID to form the member id, and to every lock
	// name to form the full name whose key is locked. Coordinators with
	// different full names never conflict. The two are simply concatenated
	// (as Cinder does), so prefix "a" with lock "bc" and prefix "ab" with
	// lock "c" are the same lock "abc": end a prefix with a separator that
	// names do not start with, such as "billing/". Default: "".
	Prefix string
	// HeartbeatInterval is how often the member row is refreshed and every
	// session holding locks is checked: each beat costs one statement on the
	// control session and a ping on each session holding locks. It also sets
	// how soon a loss is told (two heartbeats) and SessionTimeout's default.
	// Default 1s; at least 10ms and at most MaxSessionTimeout/4 (about 6
	// days), else New fails with ErrInvalidConfig.
	HeartbeatInterval time.Duration
	// InitialReconnectBackoff is the first wait before reconnecting a broken
	// control session; waits double (with jitter) up to MaxReconnectBackoff.
	// Default 100ms, or MaxReconnectBackoff when that is set lower; a
	// negative value, or one above an explicit MaxReconnectBackoff, is an
	// ErrInvalidConfig.
	InitialReconnectBackoff time.Duration
	// MaxReconnectBackoff caps the reconnect wait, jitter included. Default
	// 60s, or InitialReconnectBackoff when that is set higher; negative is an
	// ErrInvalidConfig.
	MaxReconnectBackoff time.Duration
	// SkipMigrations stops Start from applying the embedded migrations; Start
	// then only checks that the schema is present. Default false.
	SkipMigrations bool
	// Logger receives the coordinator's logs. Default slog.Default().
	Logger *slog.Logger

	// MaxSessions is the session budget: the most server backends
	// (connections) this coordinator uses at once, all kinds counted. Idle,
	// or holding any number of locks taken without a wait, it uses two: the
	// control session and one lock session. Waits take the rest, one wait
	// session each (the server wakes them in FIFO order, the best handoff);
	// waits beyond the budget cost no backend at all (see the package doc,
	// Sessions). Raising it may buy speed, never correctness; each session
	// is a backend process on the server (a few MB of memory) and counts
	// against max_connections. Default 4 (DefaultMaxSessions); between 2
	// (no wait session: every wait beyond the budget) and 1024, else New
	// fails with ErrInvalidConfig.
	MaxSessions int
	// ConnectionHeadroom is how many of the server's connection slots this
	// coordinator leaves free: it opens no session that would leave fewer
	// (checked from max_connections, the reserved slots and
	// pg_stat_activity). Start fails with ErrTooManyConnections when its
	// first lock session would; after Start a session refused this way, or
	// by the server ("too many clients"), is simply not opened: locks stay
	// on the sessions already open and waits go beyond the budget. Default
	// (0): 10% of max_connections less the reserved slots. Negative: no
	// check.
	ConnectionHeadroom int

	// SessionTimeout bounds how long a lock is held by a holder that went
	// silent (frozen by SIGSTOP or a long pause, or cut off without a FIN).
	// On PostgreSQL 14 and later the server ends any session of the
	// coordinator that stays idle this long (idle_session_timeout), freeing
	// its locks; the heartbeat keeps healthy sessions from ever being idle
	// that long. The holder's own lease is shorter: a session not heard
	// from for SessionTimeout - 2×HeartbeatInterval has its holds reported
	// lost, before the server can hand them on. The lease is looked at by
	// every heartbeat and by every look a holder takes (Lock.Lost,
	// Lock.Token, Synchronized's ctx), so a holder that resumes after a
	// longer pause sees its loss at its first look. This rests on the
	// client's and the server's clocks ticking at the same rate. On older
	// servers only the client-side lease applies, and a frozen holder keeps
	// its locks until TCP gives up.
	//
	// The lease must be at least two heartbeats and at least MinLease, so
	// that it fires only when nothing has been heard on the session for two
	// whole ping periods, never because one ping was late: SessionTimeout
	// is at least max(4 × HeartbeatInterval, 2 × HeartbeatInterval +
	// MinLease). Default: max(5 × HeartbeatInterval, 2 × HeartbeatInterval
	// + 1s), 5s with the default heartbeat: a lease of at least a second,
	// since on a loaded machine a busy session's answer can take a few
	// hundred milliseconds (measured: 64 goroutines on one lock session,
	// 50ms heartbeat, a 2-core machine at load 11, lost holds to a 200ms
	// lease and none to a 1s one). A shorter lease, set explicitly, trades
	// that margin for a shorter hold by a frozen holder. At most
	// MaxSessionTimeout (about 24.8 days, the server's bound), which the
	// default never exceeds.
	SessionTimeout time.Duration

	// MaxHeldLocks caps the locks this coordinator holds at once; Acquire
	// beyond it returns an error wrapping ErrTooManyLocks. PostgreSQL's lock
	// table is shared by the whole cluster and, when it fills, every session
	// fails (about 12,800 locks on a default PostgreSQL 15, from
	// max_locks_per_transaction × max_connections): the cap keeps one busy
	// service from taking the cluster down. Default 4000 (DefaultMaxHeldLocks);
	// negative is an ErrInvalidConfig. Each held lock costs about 1 KB of Go
	// heap and a slot of the server's lock table.
	MaxHeldLocks int
	// Fencing makes every acquire also record its fencing token in
	// pgcoord.fences, so that a write in the application's own transaction
	// on this database can be made conditional on the lock still being the
	// writer's: guard it with pgcoord.fence_ok(key, token). It costs one
	// table write per acquire, which is why it is off by default. Only the
	// newest token of a key passes (of overlapping shared holders, the last
	// one's), and holders that record none (AcquireTx, a coordinator
	// without Fencing) do not move it: see docs/api.md, Fencing tokens.
	Fencing bool
	// Retention is how long the rows of stopped and silent (crashed, cut
	// off) members, and the registrations of names nobody uses any more,
	// are kept: the coordinator deletes older ones every Retention/4, at
	// most hourly (see Prune). Running members and names held, waited for
	// or used within the retention are never deleted. Default 24h
	// (DefaultRetention); at least MinRetention (1h); negative: this
	// coordinator never prunes (`pgcoord prune` still can). A positive value
	// under MinRetention is an ErrInvalidConfig.
	Retention time.Duration
	// AsyncRelease makes Release of a lock held on a lock session (one not
	// taken after a wait) return once its unlock is queued: the unlock goes
	// out in the same round trip as the session's next statement, or on its
	// own within 0.5ms when none comes. A loop of acquire and
	// release then costs one round trip instead of two. The price: for up to
	// that delay plus a round trip after Release returns, other processes
	// still find the lock busy (this process's Locks do not), and Release
	// cannot report a loss that only the unlock finds: that closes Lost()
	// later instead (and counts in Stats().Lost), so check Lost() after the
	// unlock has had time to run if the section's outcome matters. Off by
	// default: with it off, a lock is free for everyone when Release returns.
	AsyncRelease bool
}

// MinLease is the shortest lease (SessionTimeout less two heartbeats) that
// Config accepts: shorter, a scheduling stall of a loaded machine could end
// holds of a healthy session.
const MinLease = 100 * time.Millisecond

// MaxSessionTimeout is the longest SessionTimeout: the server takes it as
// idle_session_timeout and tcp_user_timeout, milliseconds in an int32, and
// refuses more (Start would fail with the server's "invalid value for
// parameter"). HeartbeatInterval is at most a quarter of it, since
// SessionTimeout is at least four heartbeats.
const MaxSessionTimeout = math.MaxInt32 * time.Millisecond

// defaultLeaseFloor is the shortest lease the default SessionTimeout gives.
const defaultLeaseFloor = time.Second

// asyncReleaseDelay is the longest an unlock queued by Release under
// Config.AsyncRelease waits for another statement to share its round trip:
// long enough for a loop's next Acquire to come, short against a round trip.
const asyncReleaseDelay = 500 * time.Microsecond

// applyDefaults fills in every field left at its zero value (New calls it
// before validateConfig).
func applyDefaults(cfg *Config) {
	cfg.HeartbeatInterval = cmp.Or(cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	// A default never contradicts the one bound the user set: MaxReconnectBackoff
	// 50ms alone lowers the first wait to 50ms, InitialReconnectBackoff 2m
	// alone raises the cap to 2m. Only two explicit values can conflict.
	switch initial, maxb := cfg.InitialReconnectBackoff, cfg.MaxReconnectBackoff; {
	case initial == 0 && maxb > 0:
		cfg.InitialReconnectBackoff = min(DefaultInitialReconnectBackoff, maxb)
	case maxb == 0 && initial > 0:
		cfg.MaxReconnectBackoff = max(DefaultMaxReconnectBackoff, initial)
	}
	cfg.InitialReconnectBackoff = cmp.Or(cfg.InitialReconnectBackoff, DefaultInitialReconnectBackoff)
	cfg.MaxReconnectBackoff = cmp.Or(cfg.MaxReconnectBackoff, DefaultMaxReconnectBackoff)
	cfg.MaxSessions = cmp.Or(cfg.MaxSessions, DefaultMaxSessions)
	cfg.MaxHeldLocks = cmp.Or(cfg.MaxHeldLocks, DefaultMaxHeldLocks)
	cfg.Retention = cmp.Or(cfg.Retention, DefaultRetention)
	if cfg.HeartbeatInterval > 0 && cfg.HeartbeatInterval <= MaxSessionTimeout/4 {
		// Within MaxSessionTimeout, which still leaves four heartbeats;
		// a longer heartbeat is refused (and would overflow here).
		cfg.SessionTimeout = cmp.Or(cfg.SessionTimeout,
			min(max(5*cfg.HeartbeatInterval, 2*cfg.HeartbeatInterval+defaultLeaseFloor), MaxSessionTimeout))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AgentID == "" {
		cfg.AgentID = uuid.NewString()
	}
}

func validateConfig(cfg *Config) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case cfg.ConnString == "" && cfg.Pool == nil:
		return bad("ConnString", "one of ConnString and Pool is required")
	case cfg.ConnString != "" && cfg.Pool != nil:
		return bad("ConnString", "set ConnString or Pool, not both")
	case cfg.HeartbeatInterval < 0:
		return bad("HeartbeatInterval", "must be positive, got %v", cfg.HeartbeatInterval)
	case cfg.HeartbeatInterval < 10*time.Millisecond:
		return bad("HeartbeatInterval", "must be at least 10ms, got %v", cfg.HeartbeatInterval)
	case cfg.HeartbeatInterval > MaxSessionTimeout/4:
		return bad("HeartbeatInterval", "must be at most %v (a quarter of MaxSessionTimeout), got %v", MaxSessionTimeout/4, cfg.HeartbeatInterval)
	case cfg.InitialReconnectBackoff < 0:
		return bad("InitialReconnectBackoff", "must be positive, got %v", cfg.InitialReconnectBackoff)
	case cfg.MaxReconnectBackoff < 0:
		return bad("MaxReconnectBackoff", "must be positive, got %v", cfg.MaxReconnectBackoff)
	case cfg.InitialReconnectBackoff > cfg.MaxReconnectBackoff:
		return bad("InitialReconnectBackoff", "%v is above MaxReconnectBackoff %v",
			cfg.InitialReconnectBackoff, cfg.MaxReconnectBackoff)
	case cfg.SessionTimeout < 4*cfg.HeartbeatInterval || cfg.SessionTimeout < 2*cfg.HeartbeatInterval+MinLease:
		return bad("SessionTimeout", "%v leaves a lease (SessionTimeout less two heartbeats) under two heartbeats or under %v: it must be at least %v",
			cfg.SessionTimeout, MinLease, max(4*cfg.HeartbeatInterval, 2*cfg.HeartbeatInterval+MinLease))
	case cfg.SessionTimeout > MaxSessionTimeout:
		return bad("SessionTimeout", "must be at most %v (the server's idle_session_timeout and tcp_user_timeout are milliseconds in an int32), got %v",
			MaxSessionTimeout, cfg.SessionTimeout)
	case cfg.MaxSessions < 1+lockSessions:
		return bad("MaxSessions", "must be at least 2 (the control session and the lock session), got %d", cfg.MaxSessions)
	case cfg.MaxSessions > maxSessionsLimit:
		return bad("MaxSessions", "must be at most %d, got %d", maxSessionsLimit, cfg.MaxSessions)
	case cfg.Retention > 0 && cfg.Retention < MinRetention:
		return bad("Retention", "must be at least %v (or negative: no pruning), got %v", MinRetention, cfg.Retention)
	case cfg.MaxHeldLocks < 0:
		return bad("MaxHeldLocks", "must be positive, got %d", cfg.MaxHeldLocks)
	}
	if err := validateName(cfg.Prefix + cfg.AgentID); err != nil {
		return bad("AgentID", "member id %v", err)
	}
	return nil
}

// waitSessions is how many wait sessions the budget leaves: all but the
// control and lock sessions.
func (cfg *Config) waitSessions() int { return cfg.MaxSessions - 1 - lockSessions }
