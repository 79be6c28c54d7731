package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgcoord/pgcoord"
)

const (
	// demoPrefix keeps the demo's members and locks apart from anything
	// else in the database.
	demoPrefix = "demo/"
	// demoHeartbeat is short so that staleness shows within a second.
	demoHeartbeat = 200 * time.Millisecond

	// volumeLockTemplate names the lock of every volume operation, as
	// Cinder writes it: f_name is the wrapped function's short name. Every
	// operation is dispatched through one method, volumeManager.volume, so
	// f_name is "volume" and the lock is one per volume ("volume-vol-1"),
	// whatever the operation: an extend and a snapshot of one volume take
	// turns, as they must. The operation's name is printed next to the lock.
	volumeLockTemplate = "{f_name}-{vol.id}"
)

// volumeLockName is what volumeLockTemplate formats to, for locks taken
// with the Lock API and for printing.
func volumeLockName(volID string) string { return "volume-" + volID }

// demoElection is the election the agents campaign in: one scheduler
// among them, as "run the scheduler on one replica" wants.
const demoElection = "scheduler"

// electionLabel names the election in the timeline's lock column.
const electionLabel = "election " + demoElection

// Volume is a storage volume, as in Cinder.
type Volume struct {
	ID string
}

// volumeArgs is the argument of every volume operation. The template reads
// {vol.id} from it: names match fields ignoring case, as Cinder's Python
// spelling needs, so "vol" finds Vol and "id" finds ID.
type volumeArgs struct {
	// Op is the operation to run (create_snapshot, extend_volume...).
	Op  string
	Vol *Volume
	// Work is how long the operation takes, inside the lock.
	Work time.Duration

	asked  time.Time // when the agent asked for the lock
	waited bool      // whether the lock was busy at first
}

// volumeManager performs volume operations for one agent, like Cinder's
// volume manager: every operation runs under its volume's lock.
type volumeManager struct {
	agent string
	c     *pgcoord.Coordinator
	sink  func(event)
	ops   map[string]func(context.Context, volumeArgs) error
	// try and wait are volume wrapped twice: Synchronize does not say
	// whether it had to wait, so the agent tries without waiting first, and
	// only when the volume is busy prints "waits" and waits.
	try, wait func(context.Context, volumeArgs) error
	// held keeps the locks taken by Hold commands.
	held []*pgcoord.Lock
}

// opLead is the command that makes an agent campaign in demoElection and
// stay leader until it is stopped (or killed): the crash scene.
const opLead = "lead"

func newVolumeManager(c *pgcoord.Coordinator, agent string, sink func(event)) *volumeManager {
	m := &volumeManager{agent: agent, c: c, sink: sink, ops: map[string]func(context.Context, volumeArgs) error{}}
	for name, fn := range map[string]func(context.Context, volumeArgs) error{
		"create_snapshot": m.createSnapshot,
		"delete_snapshot": m.deleteSnapshot,
		"extend_volume":   m.extendVolume,
		"attach_volume":   m.attachVolume,
		"detach_volume":   m.detachVolume,
		"retype_volume":   m.retypeVolume,
	} {
		m.ops[name] = fn
	}
	m.try = pgcoord.Synchronize(volumeLockTemplate, m.volume,
		pgcoord.WithCoordinator(c), pgcoord.WithBlocking(pgcoord.NoWait))
	m.wait = pgcoord.Synchronize(volumeLockTemplate, m.volume, pgcoord.WithCoordinator(c))
	return m
}

// volume runs the operation a.Op on a.Vol; its name is the f_name of the
// lock template, so every operation on one volume shares one lock.
func (m *volumeManager) volume(ctx context.Context, a volumeArgs) error {
	return m.ops[a.Op](ctx, a)
}

func (m *volumeManager) createSnapshot(ctx context.Context, a volumeArgs) error {
	return m.work(ctx, "create_snapshot", a)
}

func (m *volumeManager) deleteSnapshot(ctx context.Context, a volumeArgs) error {
	return m.work(ctx, "delete_snapshot", a)
}

func (m *volumeManager) extendVolume(ctx context.Context, a volumeArgs) error {
	return m.work(ctx, "extend_volume", a)
}

func (m *volumeManager) attachVolume(ctx context.Context, a volumeArgs) error {
	return m.work(ctx, "attach_volume", a)
}

func (m *volumeManager) detachVolume(ctx context.Context, a volumeArgs) error {
	return m.work(ctx, "detach_volume", a)
}

func (m *volumeManager) retypeVolume(ctx context.Context, a volumeArgs) error {
	return m.work(ctx, "retype_volume", a)
}

// emit stamps ev with the time and the agent and hands it on.
func (m *volumeManager) emit(ev event) {
	ev.T = time.Now().UnixNano()
	ev.Agent = m.agent
	m.sink(ev)
}

// work is the body of every operation, run with the volume's lock held.
// "releases" is emitted before returning, that is before Synchronize
// unlocks: emitted after, it could come later than the next holder's
// "holds".
func (m *volumeManager) work(ctx context.Context, op string, a volumeArgs) error {
	lock := volumeLockName(a.Vol.ID)
	ev := event{Kind: evHolds, Lock: lock, Op: op}
	if a.waited {
		ev.Waited = time.Since(a.asked)
		ev.Note = fmt.Sprintf("waited %dms", ev.Waited.Milliseconds())
	}
	m.emit(ev)
	t := time.NewTimer(a.Work)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		// Cancelled by the caller, or the lock was lost (cause ErrLockLost).
		return context.Cause(ctx)
	}
	m.emit(event{Kind: evReleases, Lock: lock, Op: op})
	return nil
}

// do performs cmd.
func (m *volumeManager) do(ctx context.Context, cmd demoCommand) (int64, error) {
	if cmd.Hold {
		return m.hold(ctx, cmd)
	}
	if cmd.Op == opLead {
		return m.lead(ctx)
	}
	if _, ok := m.ops[cmd.Op]; !ok {
		return 0, fmt.Errorf("unknown operation %q", cmd.Op)
	}
	args := volumeArgs{Op: cmd.Op, Vol: &Volume{ID: cmd.Vol}, Work: cmd.Work, asked: time.Now()}
	err := m.try(ctx, args)
	if errors.Is(err, pgcoord.ErrLockAcquireFailed) && ctx.Err() == nil {
		m.emit(event{Kind: evWaits, Lock: volumeLockName(cmd.Vol), Op: cmd.Op})
		args.waited = true
		err = m.wait(ctx, args)
	}
	return 0, err
}

// hold takes the volume's lock with the Lock API, which (unlike
// Synchronize) exposes the fencing token, and keeps it.
func (m *volumeManager) hold(ctx context.Context, cmd demoCommand) (int64, error) {
	l := m.c.GetLock(volumeLockName(cmd.Vol))
	ok, err := l.Acquire(ctx, pgcoord.Wait)
	if err != nil || !ok {
		return 0, fmt.Errorf("taking %s: acquired=%v: %w", volumeLockName(cmd.Vol), ok, err)
	}
	m.held = append(m.held, l)
	m.emit(event{Kind: evHolds, Lock: volumeLockName(cmd.Vol), Op: cmd.Op,
		Note: fmt.Sprintf("token %d, kept", l.Token())})
	return l.Token(), nil
}

// lead campaigns in demoElection, with the agent's name as the leader's
// value, and returns the term's fencing token once leader. The term lasts
// until the coordinator stops (or its process dies).
func (m *volumeManager) lead(ctx context.Context) (int64, error) {
	e := m.c.Election(demoElection)
	if err := e.Campaign(ctx, m.agent); err != nil {
		return 0, fmt.Errorf("campaigning for %s: %w", demoElection, err)
	}
	m.emit(event{Kind: evLeads, Lock: electionLabel, Op: "campaign",
		Note: fmt.Sprintf("term token %d", e.Token())})
	return e.Token(), nil
}
