package pgcoord_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/pgcoord/pgcoord"
)

// exampleCoordinator starts a coordinator on the test database (an example
// in a real program would use its own connection string).
func exampleCoordinator(agent string) *pgcoord.Coordinator {
	c, err := pgcoord.New(pgcoord.Config{
		ConnString: os.Getenv("PGCOORD_EXAMPLE_URL"),
		Prefix:     "example/",
		AgentID:    agent,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	if err := c.Start(context.Background()); err != nil {
		panic(err)
	}
	return c
}

func ExampleLock() {
	ctx := context.Background()
	a, b := exampleCoordinator("a"), exampleCoordinator("b")
	defer a.Stop(ctx)
	defer b.Stop(ctx)

	la, _ := pgcoord.NewLock("volume-{id}", map[string]string{"id": "7"}, a)
	lb := b.GetLock("volume-7")

	ok, err := la.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("a acquired:", ok, err)
	ok, err = lb.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("b acquired while a holds:", ok, err)
	fmt.Println("release:", la.Release(ctx))
	ok, err = lb.Acquire(ctx, pgcoord.Wait)
	fmt.Println("b acquired after release:", ok, err)
	fmt.Println("release again:", lb.Release(ctx), lb.Release(ctx))
	// Output:
	// a acquired: true <nil>
	// b acquired while a holds: false <nil>
	// release: <nil>
	// b acquired after release: true <nil>
	// release again: <nil> pgcoord: lock not held
}

type Volume struct{ ID string }

type DeleteRequest struct{ Vol Volume }

func ExampleSynchronize() {
	ctx := context.Background()
	c := exampleCoordinator("sync")
	defer c.Stop(ctx)

	// The template is checked against DeleteRequest here, at start-up.
	deleteVolume := pgcoord.Synchronize("{f_name}-{vol.id}",
		func(ctx context.Context, req DeleteRequest) error {
			fmt.Println("deleting", req.Vol.ID)
			return nil
		}, pgcoord.WithCoordinator(c))

	if err := deleteVolume(ctx, DeleteRequest{Vol: Volume{ID: "v1"}}); err != nil {
		fmt.Println(err)
	}
	// Output:
	// deleting v1
}

func ExampleSynchronized() {
	ctx := context.Background()
	a, b := exampleCoordinator("sync-a"), exampleCoordinator("sync-b")
	defer a.Stop(ctx)
	defer b.Stop(ctx)

	// The template's fields come from data: {vol.id} finds Volume.ID.
	data := map[string]any{"vol": Volume{ID: "v7"}}
	err := pgcoord.Synchronized(ctx, "volume-{vol.id}", data, func(ctx context.Context) error {
		fmt.Println("a deletes v7")
		// Meanwhile b cannot take "volume-v7": its function is not run.
		err := pgcoord.Synchronized(ctx, "volume-{vol.id}", data, func(ctx context.Context) error {
			fmt.Println("b deletes v7")
			return nil
		}, pgcoord.WithCoordinator(b), pgcoord.WithBlocking(pgcoord.NoWait))
		fmt.Println("b gave up:", errors.Is(err, pgcoord.ErrLockAcquireFailed))
		return nil
	}, pgcoord.WithCoordinator(a))
	fmt.Println("a done:", err)

	// A template that does not fit data takes no lock and runs nothing.
	err = pgcoord.Synchronized(ctx, "volume-{vol.size}", data, func(ctx context.Context) error {
		return nil
	}, pgcoord.WithCoordinator(a))
	fmt.Println("bad template:", errors.Is(err, pgcoord.ErrTemplate))
	// Output:
	// a deletes v7
	// b gave up: true
	// a done: <nil>
	// bad template: true
}

// fencedStore is a store that rejects writes carrying a fencing token lower
// than one it has already seen: a holder that lost its lock without knowing
// (a long pause, say) cannot overwrite its successor's work.
type fencedStore struct {
	highest int64
	value   string
}

func (s *fencedStore) write(token int64, value string) error {
	if token < s.highest {
		return fmt.Errorf("stale token %d < %d: write refused", token, s.highest)
	}
	s.highest, s.value = token, value
	return nil
}

func ExampleLock_Token() {
	ctx := context.Background()
	a, b := exampleCoordinator("fence-a"), exampleCoordinator("fence-b")
	defer a.Stop(ctx)
	defer b.Stop(ctx)
	store := &fencedStore{}

	la := a.GetLock("config")
	la.Acquire(ctx, pgcoord.Wait)
	tokenA := la.Token() // a remembers its token, then stalls...
	la.Release(ctx)      // ...and its hold ends (here simply released)

	lb := b.GetLock("config")
	lb.Acquire(ctx, pgcoord.Wait)
	fmt.Println("b writes:", store.write(lb.Token(), "from b"))
	lb.Release(ctx)

	// a wakes up and writes with its old token: refused.
	err := store.write(tokenA, "from a, late")
	fmt.Println("a's late write refused:", err != nil, "value:", store.value)
	// Output:
	// b writes: <nil>
	// a's late write refused: true value: from b
}

func ExampleElection() {
	ctx := context.Background()
	a, b := exampleCoordinator("leader-a"), exampleCoordinator("leader-b")
	defer a.Stop(ctx)
	defer b.Stop(ctx)

	ea, eb := a.Election("scheduler"), b.Election("scheduler")
	fmt.Println("a campaigns:", ea.Campaign(ctx, "a:8080"))
	l, _ := eb.Leader(ctx)
	fmt.Println("leader:", l.MemberID, l.Value)
	fmt.Println("b proclaims:", eb.Proclaim(ctx, "b:8080"))

	won := make(chan error)
	go func() { won <- eb.Campaign(ctx, "b:8080") }()
	fmt.Println("a resigns:", ea.Resign(ctx))
	<-ea.Done()
	fmt.Println("b campaigned:", <-won, eb.IsLeader())
	l, _ = ea.Leader(ctx)
	fmt.Println("leader:", l.MemberID, l.Value)
	fmt.Println("b resigns:", eb.Resign(ctx))
	_, err := ea.Leader(ctx)
	fmt.Println(err)
	// Output:
	// a campaigns: <nil>
	// leader: example/leader-a a:8080
	// b proclaims: pgcoord: not the leader: election "example/scheduler"
	// a resigns: <nil>
	// b campaigned: <nil> true
	// leader: example/leader-b b:8080
	// b resigns: <nil>
	// pgcoord: no leader: election "example/scheduler"
}

func ExampleRunAsLeader() {
	ctx := context.Background()
	c := exampleCoordinator("cron-1")
	defer c.Stop(ctx)

	err := pgcoord.RunAsLeader(ctx, c, "nightly-report", "cron-1", func(ctx context.Context) error {
		fmt.Println("only the leader runs this")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// only the leader runs this
	// done: <nil>
}

func ExampleLock_AcquireShared() {
	ctx := context.Background()
	a, b := exampleCoordinator("reader-a"), exampleCoordinator("reader-b")
	defer a.Stop(ctx)
	defer b.Stop(ctx)

	ra, rb := a.GetLock("catalog"), b.GetLock("catalog")
	ok, err := ra.AcquireShared(ctx, pgcoord.NoWait)
	fmt.Println("a reads:", ok, err)
	ok, err = rb.AcquireShared(ctx, pgcoord.NoWait)
	fmt.Println("b reads too:", ok, err)
	ok, err = b.GetLock("catalog").Acquire(ctx, pgcoord.NoWait)
	fmt.Println("a writer meanwhile:", ok, err)
	fmt.Println(ra.Release(ctx), rb.Release(ctx))
	w := b.GetLock("catalog")
	ok, err = w.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("the writer once they left:", ok, err)
	fmt.Println(w.Release(ctx))
	// Output:
	// a reads: true <nil>
	// b reads too: true <nil>
	// a writer meanwhile: false <nil>
	// <nil> <nil>
	// the writer once they left: true <nil>
	// <nil>
}

func ExampleSemaphore() {
	ctx := context.Background()
	c := exampleCoordinator("exporter")
	defer c.Stop(ctx)

	first, second, third := c.Semaphore("exports", 2), c.Semaphore("exports", 2), c.Semaphore("exports", 2)
	ok, err := first.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("first:", ok, err)
	ok, err = second.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("second:", ok, err)
	ok, err = third.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("third, while two hold:", ok, err)
	_, err = c.Semaphore("exports", 5).Acquire(ctx, pgcoord.NoWait)
	fmt.Println("another limit:", errors.Is(err, pgcoord.ErrLimitMismatch))
	fmt.Println(first.Release(ctx))
	ok, err = third.Acquire(ctx, pgcoord.NoWait)
	fmt.Println("third, once one left:", ok, err)
	fmt.Println(second.Release(ctx), third.Release(ctx))
	// Output:
	// first: true <nil>
	// second: true <nil>
	// third, while two hold: false <nil>
	// another limit: true
	// <nil>
	// third, once one left: true <nil>
	// <nil> <nil>
}

func ExampleCoordinator_WatchGroup() {
	ctx := context.Background()
	watcher, worker := exampleCoordinator("group-watcher"), exampleCoordinator("group-worker")
	defer watcher.Stop(ctx)
	defer worker.Stop(ctx)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := watcher.WatchGroup(wctx, "exporters")
	if err != nil {
		panic(err)
	}
	fmt.Println(worker.JoinGroup(ctx, "exporters", map[string]string{"format": "csv"}))
	ev := <-events
	fmt.Println(ev.Kind, ev.Member.ID, string(ev.Member.Capabilities))
	members, _ := watcher.GroupMembers(ctx, "exporters")
	fmt.Println(len(members), "member")
	fmt.Println(worker.UpdateCapabilities(ctx, "exporters", map[string]string{"format": "parquet"}))
	ev = <-events
	fmt.Println(ev.Kind, string(ev.Member.Capabilities))
	fmt.Println(worker.LeaveGroup(ctx, "exporters"))
	ev = <-events
	fmt.Println(ev.Kind, ev.Member.ID)
	fmt.Println(worker.LeaveGroup(ctx, "exporters"))
	// Output:
	// <nil>
	// Joined example/group-worker {"format": "csv"}
	// 1 member
	// <nil>
	// Updated {"format": "parquet"}
	// <nil>
	// Left example/group-worker
	// pgcoord: not a member of the group: group "example/exporters"
}
