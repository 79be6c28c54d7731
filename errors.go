package pgcoord

import (
	"errors"

	"github.com/pgcoord/pgcoord/internal/tmpl"
)

// Sentinel errors. Check them with errors.Is: the errors pgcoord returns wrap
// them with detail (which lock, which field, which template).
var (
	// ErrLockAcquireFailed is wrapped by Synchronized when a lock could not be
	// taken (busy under NoWait, timed out, or an error); fn did not run.
	ErrLockAcquireFailed = errors.New("pgcoord: lock acquire failed")
	// ErrNotHeld is returned by Release of a lock that this Lock does not hold.
	ErrNotHeld = errors.New("pgcoord: lock not held")
	// ErrAlreadyHeld is returned by Acquire on a Lock that already holds (or
	// is acquiring) its lock: locks are not reentrant.
	ErrAlreadyHeld = errors.New("pgcoord: lock already held by this Lock")
	// ErrLockLost means a hold ended without Release: its session died, was
	// cut off, or the coordinator stopped. Lost() was closed when it happened.
	ErrLockLost = errors.New("pgcoord: lock lost")
	// ErrNotStarted is returned for work on a coordinator that is not started
	// (or already stopped).
	ErrNotStarted = errors.New("pgcoord: coordinator not started")
	// ErrKeyCollision is returned when a lock name's key is already registered
	// under another name: the two names would silently share one lock.
	ErrKeyCollision = errors.New("pgcoord: lock key collision")
	// ErrTemplate is wrapped by every lock-name template error.
	ErrTemplate = tmpl.ErrTemplate
	// ErrMemberExists is returned by Start when a live member with the same
	// member id (Prefix+AgentID) is already running.
	ErrMemberExists = errors.New("pgcoord: member already exists")

	// ErrInvalidConfig is wrapped by New for a Config it cannot use.
	ErrInvalidConfig = errors.New("pgcoord: invalid config")
	// ErrInvalidName is returned for a lock name that is empty, too long, not
	// UTF-8 or contains a NUL byte.
	ErrInvalidName = errors.New("pgcoord: invalid lock name")
	// ErrSchemaMissing is returned by Start when the pgcoord schema is
	// absent, dirty or too old (with SkipMigrations set), or lacks an object
	// pgcoord needs (a table, view, view column or function changed by hand
	// after migrating; the error names each).
	ErrSchemaMissing = errors.New("pgcoord: schema not migrated")
	// ErrPreReleaseSchema is returned by Start, Migrate, MigratePool and
	// `pgcoord migrate` when schema pgcoord was migrated by a pre-release
	// pgcoord (a schema_migrations version below 100): v0.1.0 squashed that
	// history, so it cannot be moved forward. Drop schema pgcoord and
	// migrate again (CHANGELOG.md, v0.1.0, says how to keep fencing tokens
	// increasing).
	ErrPreReleaseSchema = errors.New("pgcoord: schema written by a pre-release pgcoord")
	// ErrTooManyLocks is returned by Acquire when the coordinator already
	// holds Config.MaxHeldLocks locks.
	ErrTooManyLocks = errors.New("pgcoord: too many locks held")
	// ErrLockTableFull is returned by Acquire when PostgreSQL's shared lock
	// table is full (SQLSTATE 53200): the whole cluster is out of lock
	// slots. Release locks, lower MaxHeldLocks, or raise the server's
	// max_locks_per_transaction. The coordinator carries on.
	ErrLockTableFull = errors.New("pgcoord: server lock table full")
	// ErrSessionLocksUnsupported is returned by Start when the server end of
	// a connection changes between statements (a transaction-pooling proxy
	// such as PgBouncer in transaction mode): session advisory locks would
	// not be locks there. Connect directly or through session pooling, or
	// take transaction-scoped locks through the proxy with AcquireTx.
	ErrSessionLocksUnsupported = errors.New("pgcoord: session advisory locks unsupported on this connection")
	// ErrTooManyConnections is wrapped by the error of a session the server
	// refused for want of connection slots (SQLSTATE 53300, "too many
	// clients"), or that the coordinator did not open because it would have
	// left fewer than Config.ConnectionHeadroom slots free. Start returns it
	// when it cannot have its first two sessions so; past Start the
	// coordinator carries on with the sessions it has (waits go beyond the
	// budget).
	ErrTooManyConnections = errors.New("pgcoord: too many connections")
	// ErrWrongServer is returned when a session reaches a server it must
	// not hold locks on: a standby in recovery (its advisory locks exclude
	// nobody on the primary), or a server other than the control
	// session's (another cluster, or another timeline of it: the other
	// side of a failover), or, for the control session, a primary of its
	// cluster on an earlier timeline than the one it was on (an old
	// primary still running after a failover). The session is closed,
	// never used. With a multi-host connection string, a standby is
	// skipped for the next host.
	ErrWrongServer = errors.New("pgcoord: session on the wrong server")

	// ErrNotLeader is returned by Election.Resign and Election.Proclaim
	// when the Election does not lead (never did, resigned, or lost it).
	ErrNotLeader = errors.New("pgcoord: not the leader")
	// ErrNoLeader is returned by Election.Leader when the election has no
	// leader now.
	ErrNoLeader = errors.New("pgcoord: no leader")
	// ErrLimitMismatch is wrapped by Semaphore.Acquire when someone holds
	// the semaphore with another limit: holders must agree on how many
	// may hold it.
	ErrLimitMismatch = errors.New("pgcoord: semaphore limit mismatch")
	// ErrInvalidLimit is returned by Semaphore.Acquire for a limit below 1
	// or above MaxSemaphoreLimit.
	ErrInvalidLimit = errors.New("pgcoord: invalid semaphore limit")
	// ErrNotJoined is returned by LeaveGroup and UpdateCapabilities when
	// this member is not in the group.
	ErrNotJoined = errors.New("pgcoord: not a member of the group")
	// ErrInvalidCapabilities is returned by JoinGroup and
	// UpdateCapabilities for capabilities that do not encode as JSON.
	ErrInvalidCapabilities = errors.New("pgcoord: invalid capabilities")
	// ErrInvalidValue is returned by Campaign and Proclaim, before any
	// I/O, for a value longer than MaxElectionValueLen, with a NUL byte or
	// not valid UTF-8.
	ErrInvalidValue = errors.New("pgcoord: invalid election value")

	// ErrNoTransaction is returned by AcquireTx, AcquireSharedTx,
	// AcquireFencedTx and FenceTx when tx is nil.
	ErrNoTransaction = errors.New("pgcoord: no transaction")
	// ErrAdvisoryLocksUnsupported is returned by Start when the server's
	// advisory locks do not exclude: two of the coordinator's sessions were
	// both granted one probe key. CockroachDB is such a server (its
	// pg_try_advisory_lock returns true without locking). No pgcoord lock
	// can work there: coordinate through a PostgreSQL server, or with the
	// platform's own primitives (CockroachDB: SELECT ... FOR UPDATE on a
	// row per name).
	ErrAdvisoryLocksUnsupported = errors.New("pgcoord: advisory locks do not exclude on this server")

	// ErrDeadlock is returned by Acquire, AcquireShared, Campaign and
	// Semaphore.Acquire when the wait closed a cycle of waits among
	// members (or goroutines of one member) and was chosen to break it:
	// the youngest wait of the cycle, within about 1.1-1.4 s of the cycle
	// closing. It wraps the cycle's names and members, e.g. `member A
	// (goroutine 7) waits for "y" held by member B (goroutine 9), which
	// waits for "x" held by member A (goroutine 7)`. The wait took
	// nothing: release what the goroutine holds and try again. See
	// docs/deadlocks.md.
	ErrDeadlock = errors.New("pgcoord: deadlock")
)
