package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord"
)

// demoStyle fits the demo's tables in a terminal.
var demoStyle = tableStyle{timeLayout: "15:04:05.000", indent: "  "}

const (
	// demoPause is an agent's think time between two operations, which
	// gives the others a chance at the volume it just released.
	demoPause = 25 * time.Millisecond
	// crashVol is the volume agent-c holds when it is killed.
	crashVol = "vol-2"
	// staleAfter is how long after the kill the members are shown: five
	// heartbeats, so the dead member's age stands out.
	staleAfter = time.Second
)

const demoDescription = `The showcase of pgcoord: three agents (agent-a and agent-b in this process,
agent-c in a child process) perform Cinder-like volume operations under
pgcoord.Synchronize("{f_name}-{vol.id}", ...), with a timeline of who waits for,
holds and releases which lock; the members and held locks tables; then agent-c
is killed (SIGKILL) while it holds a lock and leads the "scheduler" election:
agent-a takes the lock over, agent-b becomes leader with a larger term token,
and agent-c's member row goes stale. Needs about 3 seconds, plus starting a
throwaway PostgreSQL when no database is given. Uses the prefix "demo/".`

// cmdDemo implements "pgcoord demo".
func cmdDemo(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord demo [--database-url URL]", demoDescription)
	dbURL := fs.String("database-url", "", "PostgreSQL `URL` (default $DATABASE_URL; when neither is set, a throwaway server)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if code, done := a.noArgs(fs); done {
		return code
	}
	began := time.Now()
	url, err := a.demoDatabase(*dbURL)
	if err != nil {
		return a.fail(err)
	}
	d := &demo{url: url, w: a.stdout, began: began}
	if err := d.run(a.ctx); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// demo is one run of the showcase.
type demo struct {
	url   string
	w     io.Writer
	began time.Time

	tl *timeline
	// obs is the demo's own connection, for the tables.
	obs    *pgx.Conn
	agentA *localAgent
	agentB *localAgent
	agentC *remoteAgent
}

func (d *demo) run(ctx context.Context) (err error) {
	if err := pgcoord.Migrate(ctx, d.url); err != nil {
		return err
	}
	if d.obs, err = connect(ctx, d.url, "pgcoord-demo"); err != nil {
		return err
	}
	defer closeConn(d.obs)

	d.tl = newTimeline(d.w)
	defer d.tl.close()
	if err := d.startAgents(ctx); err != nil {
		return err
	}
	defer d.stopAgents()

	d.tl.printBlock(func(w io.Writer) { d.intro(w) })

	snap, err := d.sceneOperations(ctx)
	if err != nil {
		return err
	}
	if err := d.sceneTables(ctx, snap); err != nil {
		return err
	}
	killedAt, err := d.sceneCrash(ctx)
	if err != nil {
		return err
	}
	if err := d.sceneStale(ctx, killedAt); err != nil {
		return err
	}
	return d.sceneSummary()
}

func (d *demo) intro(w io.Writer) {
	fmt.Fprintf(w, `pgcoord demo
============

Three agents perform Cinder-like operations on three shared volumes. Every
operation goes through one method wrapped like this:

    volume := pgcoord.Synchronize("{f_name}-{vol.id}", m.volume,
        pgcoord.WithCoordinator(c))

f_name is the wrapped function's name, "volume", so each volume has one lock
("volume-vol-1") and the operations on it take turns, whichever agent runs them.
agent-a and agent-b run in this process (pid %d); agent-c runs in its own
process (pid %d), so that it can really crash later on. Names carry the
prefix %q.
`, os.Getpid(), d.agentC.pid, demoPrefix)
}

func (d *demo) startAgents(ctx context.Context) error {
	// agent-c's process starts while the other two connect.
	type started struct {
		r   *remoteAgent
		err error
	}
	ch := make(chan started, 1)
	go func() {
		r, err := startRemoteAgent(ctx, d.url, "agent-c", d.tl)
		ch <- started{r, err}
	}()
	var errs []error
	var err error
	if d.agentA, err = startLocalAgent(ctx, d.url, "agent-a", d.tl); err != nil {
		errs = append(errs, err)
	}
	if d.agentB, err = startLocalAgent(ctx, d.url, "agent-b", d.tl); err != nil {
		errs = append(errs, err)
	}
	s := <-ch
	d.agentC = s.r
	if s.err != nil {
		errs = append(errs, s.err)
	}
	if len(errs) > 0 {
		d.stopAgents()
		return errors.Join(errs...)
	}
	return nil
}

// stopAgents stops whatever agents are running; it may be called twice.
func (d *demo) stopAgents() {
	var wg sync.WaitGroup
	for _, a := range []*localAgent{d.agentA, d.agentB} {
		if a != nil {
			wg.Go(func() { _ = a.stop() })
		}
	}
	if d.agentC != nil {
		wg.Go(d.agentC.stop)
	}
	wg.Wait()
}

func (d *demo) heading(title string) {
	d.tl.printBlock(func(w io.Writer) {
		fmt.Fprintf(w, "\n== %s %s\n\n", title, strings.Repeat("=", max(3, 72-len(title))))
	})
}

// sleepCtx sleeps for d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
