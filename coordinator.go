package pgcoord

import (
	"context"
	"fmt"
	"log/slog"
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
	// stopAsked is cancelled when Stop is called, before it waits for
	// lifeMu: it ends a Start under way, which would otherwise hold lifeMu
	// (and Stop, whatever its ctx) for as long as Start's own ctx allows.
	stopAsked context.Context
	askStop   context.CancelFunc
	// state is one of stateNew, stateStarted, stateStopped.
	state atomic.Int32
	// runCtx is cancelled by Stop: it ends the heartbeat and every wait.
	runCtx    context.Context
	cancelRun context.CancelFunc
	hbDone    chan struct{}
	// beatNow asks the heartbeat loop for a beat at once (see beatSoon).
	beatNow chan struct{}
	// checkNow asks for every session to be checked at once (see
	// checkSoon).
	checkNow  chan struct{}
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
	// dialLevel is how many times a redial's first attempt doubles its
	// bound (see dialSession); dialStall is when (monoNow) the level was
	// last raised, or attempts began to be abandoned after a success (0:
	// none since) (see raiseDialLevel).
	dialLevel atomic.Int32
	dialStall atomic.Int64
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
	// prims are the per-name stats of elections, semaphores and groups.
	prims primStats
	// joined is what this life of the member joined, for a reconnect.
	joined joinedGroups

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
	// queue counts this coordinator's wait tickets (queue.go).
	queue queueState
	// ctlb batches short control statements of concurrent callers
	// (ctlbatch.go).
	ctlb ctlBatcher
	// beatReq carries Heartbeat's requests to the heartbeat goroutine.
	beatReq chan chan error
	// memberBeat is the member row's update in flight, if any; only the
	// heartbeat goroutine touches it (see beat).
	memberBeat *memberBeat
	// afterProbe, set by tests only, runs between the two probes of
	// checkLocksExclude.
	afterProbe func()
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
	c.stopAsked, c.askStop = context.WithCancel(context.Background())
	c.beatNow = make(chan struct{}, 1)
	c.checkNow = make(chan struct{}, 1)
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
// When ctx ends first, Start returns its error and leaves nothing open; so
// it does when Stop is called meanwhile (its error then wraps
// ErrNotStarted).
func (c *Coordinator) Start(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stopAsked, cancel)()
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch c.state.Load() {
	case stateStarted:
		return nil
	case stateStopped:
		return fmt.Errorf("%w: coordinator was stopped; create a new one with New", ErrNotStarted)
	}
	defer func() {
		if err != nil && c.stopAsked.Err() != nil {
			err = fmt.Errorf("%w: Stop was called during Start: %w", ErrNotStarted, err)
		}
	}()
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
	// A role that lacks a grant is told which, from docs/grants.sql.
	if err := c.checkSchema(ctx); err != nil {
		return withGrantAdvice(err, c.connConfig.User, false)
	}
	if err := c.registerMember(ctx, true); err != nil {
		return withGrantAdvice(err, c.connConfig.User, false)
	}
	if err := c.checkMemberLockStays(ctx); err != nil {
		return withGrantAdvice(err, c.connConfig.User, false)
	}

	c.active.Store(true)
	c.lastBeat.Store(time.Now().UnixNano())
	// Made before the state says started: Heartbeat, from any goroutine,
	// reads hbDone once it sees the coordinator running.
	c.hbDone = make(chan struct{})
	c.pruneDone = make(chan struct{})
	c.since.done = make(chan struct{})
	c.notifier.done = make(chan struct{})
	c.state.Store(stateStarted)
	go c.heartbeatLoop()
	go c.pruneLoop()
	go c.sinceLoop()
	go c.notifier.loop()
	c.log.Info("pgcoord: member started", slog.Int("max_sessions", c.cfg.MaxSessions))
	return nil
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

var defaultCoordinator atomic.Pointer[Coordinator]

// SetDefault sets the global coordinator used by NewLock and Synchronized
// when none is given, like cinder.coordination.COORDINATOR.
func SetDefault(c *Coordinator) { defaultCoordinator.Store(c) }

// Default returns the global coordinator, or nil when none was set.
func Default() *Coordinator { return defaultCoordinator.Load() }
