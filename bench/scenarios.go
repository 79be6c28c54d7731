package main

import (
	"context"
	"time"
)

// scenarioFunc measures one row once: one round of it.
type scenarioFunc func(ctx context.Context, b *bench) (sample, error)

// group is a section of the table; each row's ratio is taken against its
// group's floor, in the same round.
type group int

const (
	groupUncontended group = iota
	groupParallel
	groupHandoff
	groupTakeover
)

// key is the group's short name, which prefixes its rows' names for -only
// and in the progress lines: "takeover/pgcoord: ...".
func (g group) key() string {
	return [...]string{"uncontended", "parallel", "handoff", "takeover"}[g]
}

// title heads the group's section of the table.
func (g group) title() string {
	switch g {
	case groupUncontended:
		return "Uncontended: one goroutine, one name, acquire + release"
	case groupParallel:
		return "Parallel: 64 goroutines on distinct names, acquire + release"
	case groupHandoff:
		return "Contended handoff: two contenders take turns on one name (ops = handoffs; latency = waiting acquire)"
	case groupTakeover:
		return "SIGKILL takeover: holder process killed, waiter already queued (latency = kill to acquire)"
	}
	return "?"
}

// latencyOnly reports whether the group's figure is a latency, not a rate:
// its ratio is then the floor's p50 over the row's p50 (higher is faster,
// as for the rates).
func (g group) latencyOnly() bool { return g == groupTakeover }

// peer is a server besides PostgreSQL that a row needs.
type peer int

const (
	peerNone peer = iota
	peerEtcd
	peerEtcdNoFsync
	peerRedis
)

// id is the row's name prefixed by its group's key.
func (s scenario) id() string { return s.group.key() + "/" + s.name }

// scenario is one row of the table.
type scenario struct {
	name  string
	group group
	// floor marks the group's raw pgx floor.
	floor bool
	needs peer
	run   scenarioFunc
}

// scenarios lists the rows in table order; each group's floor comes first.
func scenarios() []scenario {
	slow := func(b *bench) time.Duration { return b.slowDuration }
	normal := func(b *bench) time.Duration { return b.duration }
	return []scenario{
		{name: "raw pgx: try, unlock (2 round trips)", group: groupUncontended, floor: true, run: rawUncontended(tryUnlock)},
		{name: "raw pgx: try + unlock pipelined (1 round trip)", group: groupUncontended, run: rawUncontended(tryUnlockPipelined)},
		{name: "raw pgx: SELECT 1 (no lock, 1 round trip)", group: groupUncontended, run: rawSelect1},
		{name: "pgcoord: Acquire(NoWait), Release", group: groupUncontended, run: pgcoordUncontended(nil)},
		{name: "pgcoord, AsyncRelease: Acquire(NoWait), Release", group: groupUncontended, run: pgcoordUncontended(asyncRelease)},
		{name: "etcd concurrency.Mutex: Lock, Unlock", group: groupUncontended, needs: peerEtcd,
			run: etcdUncontended(func(b *bench) string { return b.etcd.endpoint })},
		{name: "etcd concurrency.Mutex, --unsafe-no-fsync", group: groupUncontended, needs: peerEtcdNoFsync,
			run: etcdUncontended(func(b *bench) string { return b.etcdNoFsync.endpoint })},
		{name: "Redis redsync (go-redis v9): Lock, Unlock", group: groupUncontended, needs: peerRedis, run: redsyncUncontended},
		{name: "tooz-style (baseline): connect, try, unlock, close", group: groupUncontended, run: toozUncontended},

		{name: "raw pgx: 16 conns, try, unlock", group: groupParallel, floor: true, run: rawParallel(tryUnlock)},
		{name: "raw pgx: 16 conns, try + unlock pipelined", group: groupParallel, run: rawParallel(tryUnlockPipelined)},
		{name: "pgcoord: 1 coordinator, defaults", group: groupParallel, run: pgcoordParallel(nil)},
		{name: "pgcoord, AsyncRelease: 1 coordinator", group: groupParallel, run: pgcoordParallel(asyncRelease)},

		{name: "raw pgx: 2 conns, pg_advisory_lock, unlock", group: groupHandoff, floor: true, run: rawHandoff},
		{name: "pgcoord: 2 coordinators, Acquire(Wait), Release", group: groupHandoff, run: pgcoordHandoff(nil)},
		{name: "pgcoord: 2 coordinators, waits beyond the budget (MaxSessions 2)", group: groupHandoff, run: pgcoordHandoff(beyondBudget)},
		{name: "tooz-style (baseline): blocking=True (server wait)", group: groupHandoff, run: toozHandoff(0, normal)},
		{name: "tooz-style (baseline): blocking=60 (try-lock polling)", group: groupHandoff, run: toozHandoff(time.Minute, slow)},

		{name: "raw pgx: holder in pg_advisory_lock, raw waiter", group: groupTakeover, floor: true, run: rawTakeover},
		{name: "pgcoord: holder Acquire(NoWait), waiter Acquire(Wait)", group: groupTakeover, run: pgcoordTakeover},
		{name: "pgcoord waiter, raw holder (one backend to exit)", group: groupTakeover, run: pgcoordWaiterRawHolder},
		{name: "pgcoord: waiter beyond the budget (MaxSessions 2)", group: groupTakeover, run: pgcoordFarTakeover},
	}
}
