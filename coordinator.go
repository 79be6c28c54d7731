package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// Coordinator is a member of the coordination group: it owns a control
// session (heartbeat, member row, name registry), one lock session and a
// small pool of wait sessions, and hands out Locks. Create it with New, then
// Start it; it is safe for concurrent use.
type Coordinator struct {
	cfg        Config
	connConfig *pgx.ConnConfig
	hooks      connHooks
	memberID   string
	memberKey  int64
	memberHi   int32
	memberLo   int32
	sessionTag string
	log        *slog.Logger
	q          *db.Queries

	// lifeMu serialises Start and Stop.
	lifeMu sync.Mutex
	// state is one of stateNew, stateStarted, stateStopped.
	state atomic.Int32
	// runCtx is cancelled by Stop: it ends the heartbeat and every wait.
	runCtx    context.Context
	cancelRun context.CancelFunc
	hbDone    chan struct{}
	// beatNow asks the heartbeat loop for a beat at once (see beatSoon).
	beatNow   chan struct{}
	pruneDone chan struct{}
	// since lists holds and waits whose start held_locks.since shows;
	// guarded by mu.
	since sinceBook
	// deadlocks is the long waits and their check loop (deadlock.go).
	deadlocks deadlockBook

	control  *session
	lockSs   []*session
	waits    waitPool
	notifier notifier
	// reconnected is closed (and replaced) each time the control session is
	// reconnected; guarded by reconnMu. See onControl.
	reconnMu    sync.Mutex
	reconnected chan struct{}
	// kick lets callers cut a reconnect's backoff short (reconnectSoon).
	kick reconnectKick
	// lockRefused remembers a lock session refused for want of
	// connection slots (see lockSession).
	lockRefused refusal
	local       localTable
	names       nameCache
	busy        busyHint
	lastTerms   lastTerms
	// beat bounds every hold by the member's heartbeat (beatlease.go).
	beatLease beatLease

	// active is true while the control session works; lastBeat is when the
	// backend last answered a heartbeat (unix nanos).
	active   atomic.Bool
	lastBeat atomic.Int64
	// registered is set once this coordinator took its member lock, so a
	// failed Start never marks another live member's row stopped.
	registered atomic.Bool
	// identity is the server the control session last connected to; every
	// other session must be on the same one (see checkServer).
	identity atomic.Pointer[serverIdentity]

	stats coordStats

	// cleanups are the CleanupDone channels of connections pgx closes in
	// the background; guarded by cleanupMu.
	cleanupMu sync.Mutex
	cleanups  []<-chan struct{}

	// warnOldServer logs once that the server cannot bound idle sessions.
	warnOldServer sync.Once

	// mu guards the hold bookkeeping of every session.
	mu sync.Mutex
	// pings counts the heartbeat's pings in flight (see session.check).
	pings sync.WaitGroup
	// bg counts goroutines started for callers that may outlive the call;
	// Stop waits for them (see background).
	bg background
	// beatReq carries Heartbeat's requests to the heartbeat goroutine.
	beatReq chan chan error
}

const (
	stateNew int32 = iota
	stateStarted
	stateStopped
)

// New validates cfg and returns a Coordinator. It does no I/O.
func New(cfg Config) (*Coordinator, error) {
	applyDefaults(&cfg)
	if err := validateConfig(&cfg); err != nil {
		return nil, err
	}
	connConfig, err := baseConnConfig(&cfg)
	if err != nil {
		return nil, err
	}

	c := &Coordinator{
		cfg:        cfg,
		connConfig: connConfig,
		hooks:      hooksOf(cfg.Pool),
		memberID:   cfg.Prefix + cfg.AgentID,
		q:          db.New(),
	}
	c.memberKey, c.memberHi, c.memberLo = hash.MemberKey(c.memberID)
	// application_name ties every session of this member to its row (see the
	// held_locks view) and shows the member id in pg_stat_activity.
	c.sessionTag = sessionTagFor(c.memberID)
	c.log = cfg.Logger.With(slog.String("member", c.memberID))
	c.local.init()
	c.names.init()
	c.busy.init()
	c.waits.init(c, cfg.waitSessions())
	c.notifier.init(c)
	c.reconnected = make(chan struct{})
	c.runCtx, c.cancelRun = context.WithCancel(context.Background())
	c.beatNow = make(chan struct{}, 1)
	c.beatReq = make(chan chan error)
	return c, nil
}

// baseConnConfig parses the connection settings once, in New, so that a bad
// connection string fails before any I/O. pgx keeps passwords out of its
// parse errors.
func baseConnConfig(cfg *Config) (*pgx.ConnConfig, error) {
	if cfg.Pool != nil {
		cc := cfg.Pool.Config().ConnConfig.Copy()
		skipStandbys(cc)
		withConnectTimeout(cc)
		return cc, nil
	}
	cc, err := pgx.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: ConnString: %w", ErrInvalidConfig, err)
	}
	skipStandbys(cc)
	withConnectTimeout(cc)
	return cc, nil
}

// MemberID returns Prefix+AgentID.
func (c *Coordinator) MemberID() string { return c.memberID }

// Start connects, applies the migrations (unless SkipMigrations), registers
// the member and starts the heartbeat. A second Start is a no-op; Start after
// Stop returns an error wrapping ErrNotStarted (make a new Coordinator).
// When ctx ends first, Start returns its error and leaves nothing open.
func (c *Coordinator) Start(ctx context.Context) (err error) {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch c.state.Load() {
	case stateStarted:
		return nil
	case stateStopped:
		return fmt.Errorf("%w: coordinator was stopped; create a new one with New", ErrNotStarted)
	}
	defer func() {
		if err != nil {
			// No wait session was handed out yet; the pool stays usable
			// for a retried Start.
			c.closeSessions(context.WithoutCancel(ctx), c.waits.all())
		}
	}()

	// Sessions first, and the pooler check before any prepared statement:
	// behind a transaction-pooling proxy those fail with confusing errors.
	c.control = newSession(c, sessionControl)
	if err := c.control.connect(ctx); err != nil {
		return err
	}
	if err := c.control.do(ctx, func(_ context.Context, conn *pgx.Conn) error { return checkServerVersion(conn) }); err != nil {
		return err
	}
	c.lockSs = make([]*session, lockSessions)
	for i := range c.lockSs {
		c.lockSs[i] = newSession(c, sessionLock)
	}
	// One lock session is opened now, so that bad settings fail Start and
	// the pooler check sees two sessions; the others open on first use. A
	// member holding a few locks then has few backends, and when its
	// process dies every one of them must exit before the server is done:
	// on a small machine the backend holding the lock waits its turn
	// behind the others (SIGKILL takeover p99: 25 ms with four lock
	// sessions open, 14 ms with one).
	if err := c.lockSs[0].connect(ctx); err != nil {
		return err
	}
	if err := c.checkLocksExclude(ctx); err != nil {
		return err
	}
	if err := c.checkDistinctBackends(); err != nil {
		return err
	}
	if !c.cfg.SkipMigrations {
		if err := migrateTo(ctx, connTarget(c.connConfig, c.hooks), c.log); err != nil {
			return err
		}
	}
	if err := c.checkSchema(ctx); err != nil {
		return err
	}
	if err := c.registerMember(ctx, true); err != nil {
		return err
	}
	if err := c.checkMemberLockStays(ctx); err != nil {
		return err
	}

	c.active.Store(true)
	c.lastBeat.Store(time.Now().UnixNano())
	c.state.Store(stateStarted)
	c.hbDone = make(chan struct{})
	go c.heartbeatLoop()
	c.pruneDone = make(chan struct{})
	go c.pruneLoop()
	c.since.done = make(chan struct{})
	go c.sinceLoop()
	c.notifier.done = make(chan struct{})
	go c.notifier.loop()
	c.log.Info("pgcoord: member started", slog.Int("max_sessions", c.cfg.MaxSessions))
	return nil
}

// checkSchema makes sure the migrated schema is there, so that
// SkipMigrations on an empty database fails with advice, not with a missing
// relation deep inside an Acquire.
func (c *Coordinator) checkSchema(ctx context.Context) error {
	return c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		present, err := c.q.SchemaPresent(ctx, conn)
		if err != nil {
			return fmt.Errorf("pgcoord: checking schema: %w", err)
		}
		if !present {
			return fmt.Errorf("%w: schema pgcoord not found; run `pgcoord migrate` or pgcoord.Migrate(ctx, connString), or leave SkipMigrations false", ErrSchemaMissing)
		}
		v, err := c.q.SchemaVersion(ctx, conn)
		if err != nil {
			return fmt.Errorf("pgcoord: checking schema version: %w", err)
		}
		if v.Dirty || v.Version < int64(schemaVersion) {
			return fmt.Errorf("%w: schema pgcoord is at version %d (dirty=%v), this pgcoord needs %d; run `pgcoord migrate`",
				ErrSchemaMissing, v.Version, v.Dirty, schemaVersion)
		}
		return nil
	})
}

// registerMember takes the member lock on the control session and writes the
// member row. restart begins a new life (Start); a reconnect keeps started_at.
func (c *Coordinator) registerMember(ctx context.Context, restart bool) error {
	return c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return c.registerMemberLocked(ctx, conn, restart)
	})
}

func (c *Coordinator) registerMemberLocked(ctx context.Context, conn *pgx.Conn, restart bool) error {
	sent := monoNow()
	ok, err := c.q.TryMemberLock(ctx, conn, db.TryMemberLockParams{Key1: c.memberHi, Key2: c.memberLo})
	if err != nil {
		return fmt.Errorf("pgcoord: taking member lock: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: %q is running elsewhere (see pgcoord.live_members)", ErrMemberExists, c.memberID)
	}
	host, _ := os.Hostname()
	err = c.q.RegisterMember(ctx, conn, db.RegisterMemberParams{
		MemberID:         c.memberID,
		Prefix:           c.cfg.Prefix,
		AgentID:          c.cfg.AgentID,
		Hostname:         host,
		Pid:              int32(os.Getpid()),
		HeartbeatSeconds: c.cfg.HeartbeatInterval.Seconds(),
		SessionTag:       c.sessionTag,
		MemberKey:        c.memberKey,
		Restart:          restart,
	})
	if err != nil {
		return fmt.Errorf("pgcoord: registering member: %w", err)
	}
	c.registered.Store(true)
	c.beatHeard(sent) // the row's last_heartbeat is now()
	return nil
}

// poolerAdvice ends every ErrSessionLocksUnsupported message.
const poolerAdvice = "a transaction-pooling proxy (PgBouncer pool_mode=transaction) is in the way: connect directly or through session pooling, or take transaction-scoped locks through the proxy with pgcoord.AcquireTx"

// checkDistinctBackends refuses connections on which session advisory
// locks are not locks. Behind a transaction-pooling proxy, client
// connections share server sessions between transactions, so the
// coordinator's sessions (each asked for its backend pid when it connected)
// report the same backend.
func (c *Coordinator) checkDistinctBackends() error {
	seen := map[int32]bool{}
	for _, s := range append([]*session{c.control}, c.lockSs...) {
		if s.backendPID == 0 {
			continue // not opened yet
		}
		if seen[s.backendPID] {
			return fmt.Errorf("%w: two sessions share server backend %d; %s", ErrSessionLocksUnsupported, s.backendPID, poolerAdvice)
		}
		seen[s.backendPID] = true
	}
	return nil
}

// checkMemberLockStays checks, in a statement of its own, that the backend
// that took the member lock still holds it: behind a transaction-pooling
// proxy the next statement may run on another backend.
func (c *Coordinator) checkMemberLockStays(ctx context.Context) error {
	return c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		held, err := c.q.HoldsMemberLock(ctx, conn, db.HoldsMemberLockParams{Key1: c.memberHi, Key2: c.memberLo})
		if err != nil {
			return err
		}
		if !held {
			return fmt.Errorf("%w: the member lock vanished between two statements on one connection; %s", ErrSessionLocksUnsupported, poolerAdvice)
		}
		return nil
	})
}

// IsActive reports whether the coordinator is started and its backend
// answered within the liveness window (three heartbeat intervals).
func (c *Coordinator) IsActive() bool {
	if c.state.Load() != stateStarted || !c.active.Load() {
		return false
	}
	since := time.Since(time.Unix(0, c.lastBeat.Load()))
	return since <= 3*c.cfg.HeartbeatInterval
}

func (c *Coordinator) running() bool { return c.state.Load() == stateStarted }

// Stop releases every held lock (others see them free when Stop returns),
// marks the member stopped and closes every session. Holds released this way
// count as lost: their Lost channels close, since the critical sections they
// guarded are no longer protected. Stop is idempotent.
//
// ctx bounds the polite part: unlocking, waiting for the backends of broken
// sessions to exit, marking the member row stopped (when ctx has no
// deadline, an internal bound of 5s plus two heartbeats applies). Sessions
// are closed whatever happens, which frees their locks on the server too,
// but when ctx ends first, only once the server has noticed: a lock may
// then still look held for a moment after Stop returns.
func (c *Coordinator) Stop(ctx context.Context) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.state.Load() != stateStarted {
		c.state.Store(stateStopped)
		return nil
	}
	c.state.Store(stateStopped)
	c.active.Store(false)
	c.cancelRun()
	c.control.interrupt()
	<-c.hbDone
	<-c.pruneDone
	<-c.since.done
	<-c.notifier.done
	c.stopDeadlocks()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opTimeout())
		defer cancel()
	}
	errs := c.closeSessions(ctx, c.waits.stop())
	// Whatever they still do fails at once on the closed sessions.
	c.bg.stop()
	// A ping in flight held its session's sem, which close waited for (or
	// closed the socket under): it is over or about to be.
	c.pings.Wait()
	c.log.Info("pgcoord: member stopped")
	return errors.Join(errs...)
}

// closeSessions releases everything: lock and wait sessions first (so the
// locks are free before the member is marked stopped), then the control
// session with the member row and member lock.
func (c *Coordinator) closeSessions(ctx context.Context, waits []*session) []error {
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	var exiting []int32
	all := append(append([]*session(nil), c.lockSs...), waits...)
	for _, s := range all {
		if s == nil {
			// A Start that failed part-way left later sessions unmade.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pid, err := s.close(ctx, errStopped)
			emu.Lock()
			defer emu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if pid != 0 {
				exiting = append(exiting, pid)
			}
		}()
	}
	wg.Wait()
	c.waits.closing.Wait()
	c.waitCleanups(ctx)
	if c.control != nil && c.registered.Swap(false) {
		err := c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			// Sessions whose locks went with their connection (it broke,
			// or Stop raced a statement on it) free them when their backend
			// has exited: wait for that, so that Stop returns with every
			// lock free for others.
			for _, pid := range exiting {
				c.control.awaitGone(ctx, conn, pid)
			}
			// Under the member lock, so that nothing a cancelled control
			// session still runs on the server can write the row after us.
			if err := c.q.LockMember(ctx, conn, db.LockMemberParams{Key1: c.memberHi, Key2: c.memberLo}); err != nil {
				return err
			}
			if err := c.q.MarkStopped(ctx, conn, c.memberID); err != nil {
				return err
			}
			// The control session holds only the member lock, perhaps
			// more than once (it is reentrant): release every level.
			return c.q.UnlockAll(ctx, conn)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("pgcoord: marking member stopped: %w", err))
		}
	}
	if c.control != nil {
		_, _ = c.control.close(ctx, errStopped)
	}
	return errs
}

// trackCleanup remembers a connection pgx is closing in the background (it
// sends a cancel request and drains the socket, for up to 15 s), so that
// Stop can wait for it instead of leaving its goroutine behind.
func (c *Coordinator) trackCleanup(done <-chan struct{}) {
	c.cleanupMu.Lock()
	defer c.cleanupMu.Unlock()
	kept := c.cleanups[:0]
	for _, d := range c.cleanups {
		select {
		case <-d:
		default:
			kept = append(kept, d)
		}
	}
	c.cleanups = append(kept, done)
}

// waitCleanups waits for the background closes, until ctx ends.
func (c *Coordinator) waitCleanups(ctx context.Context) {
	c.cleanupMu.Lock()
	pending := append([]<-chan struct{}(nil), c.cleanups...)
	c.cleanupMu.Unlock()
	for _, d := range pending {
		select {
		case <-d:
		case <-ctx.Done():
			c.log.Warn("pgcoord: Stop returns before pgx finished closing a broken connection")
			return
		}
	}
}

// errStopped is the loss cause of holds ended by Stop.
var errStopped = fmt.Errorf("%w: %w", ErrLockLost, ErrNotStarted)

var defaultCoordinator atomic.Pointer[Coordinator]

// SetDefault sets the global coordinator used by NewLock and Synchronized
// when none is given, like cinder.coordination.COORDINATOR.
func SetDefault(c *Coordinator) { defaultCoordinator.Store(c) }

// Default returns the global coordinator, or nil when none was set.
func Default() *Coordinator { return defaultCoordinator.Load() }
