// Package pgcoord gives Go services that run on PostgreSQL distributed
// locks, shared locks, leader election, semaphores and groups, built on
// PostgreSQL advisory locks: a team that has Postgres needs no etcd,
// ZooKeeper or Redis. It began as what OpenStack Cinder's coordination module
// gives Cinder (named locks, a Synchronized wrapper whose lock names are
// templates over the call's arguments, a Coordinator with a heartbeat), and
// keeps its template syntax.
//
// # Getting started
//
// A Coordinator is one member: it owns a few sessions of its own on the
// server, applies the schema (in schema pgcoord) at Start, and releases
// everything at Stop.
//
//	c, err := pgcoord.New(pgcoord.Config{
//		ConnString: os.Getenv("DATABASE_URL"),
//		Prefix:     "billing/", // lock names and member ids are prefixed with it
//	})
//	if err != nil {
//		return err
//	}
//	if err := c.Start(ctx); err != nil {
//		return err
//	}
//	defer c.Stop(context.Background())
//
//	l := c.GetLock("invoice-42")
//	ok, err := l.Acquire(ctx, pgcoord.Timeout(10*time.Second))
//	if err != nil || !ok {
//		return fmt.Errorf("invoice-42 is busy: %v", err)
//	}
//	defer l.Release(ctx)
//	// ... only one process anywhere runs this for invoice-42;
//	// l.Lost() closes if the hold is lost, l.Token() is its fencing token ...
//
// Each primitive has a runnable example below, run against a real server by
// the tests.
//
// # Primitives
//
//   - Locks: [Coordinator.GetLock], [NewLock] (a name templated over data);
//     [Lock.Acquire] with [NoWait], [Timeout] or [Wait]; [Lock.Release];
//     [Lock.Lost] closes when a hold is lost; [Lock.Token] is its fencing
//     token, strictly increasing per name.
//   - Shared locks: [Lock.AcquireShared], and [WithShared] for Synchronized.
//   - [Synchronized] runs a function under locks whose names are templates
//     over its arguments; [Synchronize] wraps a function once, checking its
//     template when built.
//   - Leader election: [Coordinator.Election] (Campaign, Resign, Observe,
//     a token per term) and [RunAsLeader].
//   - Semaphores: [Coordinator.Semaphore], at most n holders of a name.
//   - Groups: [Coordinator.JoinGroup], [Coordinator.GroupMembers],
//     [Coordinator.WatchGroup].
//   - Transaction locks, for transaction-pooling proxies: [AcquireTx],
//     [AcquireSharedTx], with no Coordinator.
//
// # Guarantees
//
// While a hold's session lives nobody else holds its name. A holder whose
// session dies or is cut off is told (Lost closed, a function's context
// cancelled with cause [ErrLockLost]) within two heartbeats, 2 s by default;
// a frozen holder at its first look after it resumes; and fencing tokens let
// a store refuse a late holder's writes.
// Each guarantee with its bound and its test: docs/guarantees.md; the
// platforms (PgBouncer, Supabase, Neon, RDS, ...): docs/platforms.md.
//
// # How it works
//
// The rest of this page is the design, for those who read the code or need
// to know what a coordinator does on the server; docs/design.md has the
// layers and one Acquire's path through them.
//
// # Sessions
//
// A Coordinator owns its connections; none of them is ever in a pool, since
// a pooled connection would carry its session locks to the next borrower.
// It uses at most Config.MaxSessions of them (the session budget, default
// 4): two while idle or holding any number of locks taken without a wait,
// at most four however many goroutines wait on however many names.
//
//   - the control session runs the heartbeat, writes the member row and
//     holds the member lock (a two-int advisory lock, a key space that never
//     meets lock keys) that makes a second live member with the same id
//     fail. It also records each new name in pgcoord.locks and fencing
//     tokens in pgcoord.fences, and serves the waits beyond the budget
//     (below). It never holds a named lock, so its statements run detached
//     from their caller's context: a cancelled statement would close it.
//     None of them waits on a lock an application holds (a fencing token
//     behind a transaction that called fence_ok): the session's
//     lock_timeout is a fifth of a heartbeat, and a statement refused for
//     it runs again for as long as its caller's context allows, the
//     heartbeat beating in between. While the heartbeat reconnects it,
//     its callers wait for the reconnect (bounded) rather than fail;
//   - the lock session holds the locks taken without a server-side wait,
//     any number of them; concurrent tries and unlocks on it share a round
//     trip. NoWait is one round trip
//     (pg_try_advisory_lock and the fencing token together);
//   - wait sessions, as many as the budget leaves (two by default), wait on
//     the server with pg_advisory_lock for one contended lock each, and
//     then hold it. The server wakes them as soon as the holder releases or
//     dies, with no polling. They wait in slices of at most a second
//     and half the lease (lock_timeout), so no waiter holds a snapshot open long enough to
//     hold back VACUUM or CREATE INDEX CONCURRENTLY. Within a slice the
//     server grants waiters in the order they queued; a waiter whose slice
//     ends queues again, behind those who came meanwhile, so the order is
//     FIFO only within a second, not overall. A wait session holds no
//     other lock, so cancelling a wait (pgx closes the
//     connection) costs nobody a hold. Unused, they close after a few
//     seconds;
//   - waits beyond the budget cost no backend. For each such key the
//     control session holds a shared lock on a wait marker (the two-int key
//     made of the key's two halves); an unlock that finds a marker taken
//     sends NOTIFY pgcoord_free with the key, so releases nobody waits for
//     cost nothing extra. The control session LISTENs and, while such waits
//     are pending and it has nothing else to do, waits for notifications
//     (idle on the server: no snapshot); every wait of the key is woken
//     (the notifier, which also serves election observers and group
//     watchers: see docs/design.md). A woken wait tries its lock on a
//     lock session, and moves to a wait session when one frees up. A holder
//     that dies without a word sends no NOTIFY: every 100 ms the waits whose
//     key had no release notified for that long try their lock (a lock
//     session sends concurrent tries as one batch). Cancelling one wait
//     drops its marker at the next round and costs the others nothing.
//
// Before opening a session (from Start's first lock session on), a
// coordinator checks the server's free connection slots and leaves
// Config.ConnectionHeadroom of them (default 10% of max_connections less the
// reserved slots), so that a fleet of coordinators never takes the slots the
// application needs. Start fails with ErrTooManyConnections when it cannot
// have its two sessions so; after Start a session it does not open, or the
// server refuses with "too many clients" (ErrTooManyConnections), is simply
// done without: locks go on the lock session that is open and waits go
// beyond the budget.
//
// PostgreSQL session locks are reentrant, so exclusion between Locks of one
// process is done in-process, per name: at most one Lock per name is
// acquiring or holding in a process, and only it talks to the server.
//
// # Loss
//
// A hold ends without Release when its session dies (server restart,
// pg_terminate_backend, a broken network) or the coordinator stops. The
// heartbeat checks every session holding locks each HeartbeatInterval, and
// any statement that finds its connection broken reports it at once; the
// hold's Lost channel is closed and Synchronized cancels its function's
// context with cause ErrLockLost. Release of a lost hold returns an error
// wrapping ErrLockLost. Fencing tokens (Lock.Token) come from a sequence
// taken while the lock is held, so successive holds of one name always get
// larger tokens, across members, server restarts and failovers (see below).
//
// # Elections
//
// Coordinator.Election gives etcd-style leader election on the same
// machinery: leadership of election name is an exclusive hold of the lock
// ElectionLockPrefix+Prefix+name, so Campaign waits like Acquire (within
// the session budget) and a leader loses its leadership exactly when a
// holder would lose its lock (Done closes). Each term is recorded in
// pgcoord.elections by its leader, fenced by the term's token, with a
// NOTIFY on pgcoord_leader that the control session's listener passes to
// observers (Observe). A leader that takes over from one that did not
// resign waits two and a half of its predecessor's heartbeats before
// Campaign returns, so that the predecessor, if it still runs, was told
// first: two leaders never act at once. It skips that grace when the
// predecessor's member lock is free and its heartbeat older than its lease:
// a leader whose heartbeat fails for its lease leads no more, from its
// first look (see docs/design.md).
//
// # Shared locks, semaphores and groups
//
// Lock.AcquireShared takes a lock in the server's shared mode; the local
// table lets shared claims in together and queues them behind a waiting
// exclusive one, and a writer waiting beyond the budget holds a writer's
// intent that shared tries and waits respect, so readers never starve a
// writer. A Semaphore's slots are locks named after the semaphore, its
// limit and the slot. Group membership is a row that counts only while its
// member's member lock is held; watchers are woken by NOTIFY pgcoord_group
// on the control session's listener and read the group every heartbeat.
//
// # Keys
//
// A lock's key is the first 8 bytes of SHA-256 of its full name
// (Prefix+Name), big-endian, as a signed int64; the SQL function
// pgcoord.lock_key computes the same. The first use of a name registers it
// in pgcoord.locks, which refuses a second name with the same key
// (ErrKeyCollision). Holding a lock writes nothing on the acquire path:
// pgcoord.held_locks reads holders and waiters from pg_locks, tied to members
// by the application_name of their sessions; a hold or server-side wait that
// lasts 100 ms has its start recorded afterwards, in a batch from the control
// session into an UNLOGGED table, so that held_locks.since is exact.
//
// # Templates
//
// Lock names given to NewLock, Synchronized and Synchronize are Python
// str.format templates, as Cinder writes them: "foo-{volume.id}",
// "{f_name}-{vol.id}-{snap[name]}". A field is a name followed by any chain
// of .attr and [key]; a name or .attr is a map key, a struct field (exact,
// then the unique case-insensitive match) or a method with no arguments; a
// [key] is a map key or, when all digits, an index. "{{" and "}}" are
// literal braces. Conversions (!r, !s) and format specs are refused with
// ErrTemplate, as are unknown names, nil pointers, bad indexes and values
// that would print a memory address (a pointer inside a struct, slice or
// map, a channel, a function), which would name a different lock in every
// process.
//
// # Cancellation
//
// Every call that talks to the server takes a context. Cancelling the
// context of a waiting Acquire closes that wait's session (and nothing else).
// A statement on a shared lock session (a try, an unlock: one short round
// trip) is not interrupted by its caller's context, since pgx would close the
// session and every hold on it; an internal timeout bounds it instead. The
// caller still returns ctx.Err() as soon as its context ends, even against a
// silent server: its try is run by a goroutine of its own, and a lock that
// try takes after the caller left is given back at once. Statements on the
// control session (names, fences, elections, groups, semaphores) are never
// interrupted either (the member lock would go with the connection): the
// caller stops waiting, and the statement, bounded by the internal timeout,
// runs on. Release and Stop ignore cancellation of their context (a lock is
// always released), bounded by the same internal timeout.
//
// # Deadlocks
//
// The server cannot see a cycle of waits among members (their holds and
// waits sit on different backends, or on none), so the library does: a
// wait that lasts a second is published in pgcoord.long_waits with the
// holds of its goroutine (and of its creator while that waits for it), and
// its member looks for a cycle among such waits every 500 ms. The youngest
// wait of a cycle returns ErrDeadlock. See docs/deadlocks.md.
//
// # Silence and leases
//
// Each session records when a statement on it last succeeded (timed from
// when it was sent; a server-side wait too, so a grant read after a pause
// longer than the lease is given back and the wait goes on). The heartbeat pings every lock and wait session each
// HeartbeatInterval unless it was heard from within a quarter of an
// interval, so a healthy session is never idle for long; a busy session is
// not pinged at all (its own statements prove it alive), and a ping never
// waits for its turn or delays the next beat. A session that finds its
// connection broken has every other one pinged at once: breaks come
// together (a restart), and a holder idle on its session learns within a
// round trip. The server ends a session that stays idle
// for Config.SessionTimeout (idle_session_timeout, PostgreSQL 14+), freeing
// its locks. A session not heard from for SessionTimeout less two
// heartbeats (the lease: at least two heartbeats and MinLease) has its
// holds reported lost and its socket closed, before the server can let
// anyone else in, and no hold is added to it afterwards. The lease is
// looked at by every heartbeat and by every look a holder takes (Lost,
// Token, Synchronized's ctx), so a holder resumed after a long pause
// (SIGSTOP, a stalled VM) is told at its first look, whichever goroutine
// runs first.
//
// An unlock that fails while its connection stays open (a cancel request,
// a statement_timeout, a revoked privilege) would leave its lock held by
// nobody for as long as the session lives; the session is closed instead,
// which frees it, and the session's other holds are reported lost.
//
// # Highly available PostgreSQL
//
// Advisory locks live in the memory of the server that granted them: they
// are not replicated, and on a hot standby they exclude nobody on the
// primary. So every session, as it connects, asks in the one statement that
// prepares it whether the server is in recovery, and which cluster (system
// identifier) and timeline it is on; a standby, or a server other than the
// control session's, is refused with ErrWrongServer and the session closed.
// A hot standby also says so when the session starts (in_hot_standby,
// PostgreSQL 14+), so a multi-host connection string moves on to its next
// host at no cost, with or without target_session_attrs=read-write.
//
// A failover ends every session on the old primary, and with them every
// hold: each is reported lost. The control session reconnects, with its
// backoff, to whichever host is the primary now, and takes that server's
// identity; every other session follows it (one still on another server is
// closed, its holds lost, and dials again). It never moves back to an
// earlier timeline of its cluster: an old primary still running after the
// failover is refused with ErrWrongServer. A session that reaches the new
// primary first (a later timeline of the control session's cluster) moves
// the control session there at once and waits for it, instead of being
// refused until the heartbeat notices the old primary is gone. A promoted
// standby writes on a new timeline, and every fencing token is taken at or
// above that timeline's floor (timeline << 48, see pgcoord.next_token):
// tokens the old primary issued that never reached the standby are never
// issued again.
//
// # Transaction locks and hostile platforms
//
// Behind a transaction-pooling proxy (PgBouncer pool_mode=transaction, the
// transaction modes of Supavisor and of Neon's pooler; see docs/platforms.md)
// a session lock is not a lock, and Start refuses with
// ErrSessionLocksUnsupported. AcquireTx and AcquireSharedTx take the same
// name's lock scoped to the caller's own transaction instead, which such a
// proxy keeps on one server session; it needs no Coordinator and ends with
// the transaction (docs/transaction-locks.md). A server whose advisory
// locks do not exclude at all (CockroachDB's are stubs) is refused at Start
// with ErrAdvisoryLocksUnsupported: the control session takes a probe key
// and the lock session must be refused it.
package pgcoord
