package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
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

// demoCommand is one operation an agent is asked to perform.
type demoCommand struct {
	Op   string        `json:"op"`
	Vol  string        `json:"vol"`
	Work time.Duration `json:"work,omitempty"`
	// Hold takes the volume's lock and keeps it after the command returns,
	// until the agent is stopped (or killed): the crash scene.
	Hold bool `json:"hold,omitempty"`
}

// demoAgent is an agent the demo drives, in this process or in a child.
type demoAgent interface {
	// Do performs cmd and returns once it is done; for a Hold command, the
	// fencing token of the hold.
	Do(ctx context.Context, cmd demoCommand) (token int64, err error)
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

// newDemoCoordinator returns a started coordinator for a demo agent.
func newDemoCoordinator(ctx context.Context, url, agent string) (*pgcoord.Coordinator, error) {
	c, err := pgcoord.New(pgcoord.Config{
		ConnString:        url,
		Prefix:            demoPrefix,
		AgentID:           agent,
		HeartbeatInterval: demoHeartbeat,
		// The demo runs Migrate once; each agent would redo the check.
		SkipMigrations: true,
		// The timeline tells the story; the library's logs would clutter it.
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		if errors.Is(err, pgcoord.ErrMemberExists) {
			return nil, fmt.Errorf("%s: %w (is another demo running on this database?)", agent, err)
		}
		return nil, fmt.Errorf("%s: %w", agent, err)
	}
	return c, nil
}

// localAgent is an agent in this process.
type localAgent struct {
	id string
	c  *pgcoord.Coordinator
	m  *volumeManager
}

func startLocalAgent(ctx context.Context, url, id string, tl *timeline) (*localAgent, error) {
	c, err := newDemoCoordinator(ctx, url, id)
	if err != nil {
		return nil, err
	}
	return &localAgent{id: id, c: c, m: newVolumeManager(c, id, tl.add)}, nil
}

// Do implements demoAgent.
func (l *localAgent) Do(ctx context.Context, cmd demoCommand) (int64, error) {
	return l.m.do(ctx, cmd)
}

func (l *localAgent) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return l.c.Stop(ctx)
}

// agentMessage is a line from a demo-agent child to the demo.
type agentMessage struct {
	Ready bool   `json:"ready,omitempty"`
	Event *event `json:"event,omitempty"`
	// Done answers a command: Err is empty when it succeeded.
	Done  bool   `json:"done,omitempty"`
	Token int64  `json:"token,omitempty"`
	Err   string `json:"err,omitempty"`
}

// remoteAgent is an agent in a child process ("pgcoord demo-agent"), so
// that it can be killed for real: commands go to its stdin, events and
// answers come back on its stdout as JSON lines.
type remoteAgent struct {
	id    string
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	// replies carries the answers (ready, done) in order.
	replies chan agentMessage
	// exited is closed once the child has exited and been waited for.
	exited chan struct{}
	// mu serialises Do.
	mu sync.Mutex
}

func startRemoteAgent(ctx context.Context, url, id string, tl *timeline) (*remoteAgent, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding pgcoord's own binary to start %s: %w", id, err)
	}
	cmd := exec.Command(exe, "demo-agent", "--agent", id)
	// The URL goes in the environment, not the arguments, where ps would
	// show a password to every user of the machine.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C at the terminal is for the demo,
	// which then stops the child itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	r := &remoteAgent{id: id, cmd: cmd, pid: cmd.Process.Pid, stdin: stdin,
		replies: make(chan agentMessage, 16), exited: make(chan struct{})}
	go r.read(stdout, tl)

	if _, err := r.await(ctx, 30*time.Second); err != nil {
		r.stop()
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	return r, nil
}

// read forwards the child's events to the timeline and its answers to
// replies, then reaps the child.
func (r *remoteAgent) read(stdout io.Reader, tl *timeline) {
	defer close(r.exited)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var m agentMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Event != nil {
			tl.add(*m.Event)
			continue
		}
		select {
		case r.replies <- m:
		default: // nobody is listening any more (the demo is aborting)
		}
	}
	// Wait only after reading everything, as StdoutPipe requires.
	_ = r.cmd.Wait()
}

// await returns the next answer of the child.
func (r *remoteAgent) await(ctx context.Context, timeout time.Duration) (agentMessage, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m := <-r.replies:
		if m.Err != "" {
			return m, errors.New(m.Err)
		}
		return m, nil
	case <-r.exited:
		return agentMessage{}, fmt.Errorf("%s exited unexpectedly", r.id)
	case <-t.C:
		return agentMessage{}, fmt.Errorf("%s did not answer within %v", r.id, timeout)
	case <-ctx.Done():
		return agentMessage{}, ctx.Err()
	}
}

// Do implements demoAgent.
func (r *remoteAgent) Do(ctx context.Context, cmd demoCommand) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line, err := json.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	if _, err := r.stdin.Write(append(line, '\n')); err != nil {
		return 0, fmt.Errorf("%s: %w", r.id, err)
	}
	m, err := r.await(ctx, 30*time.Second)
	if err != nil {
		return 0, fmt.Errorf("%s: %s %s: %w", r.id, cmd.Op, cmd.Vol, err)
	}
	return m.Token, nil
}

// kill crashes the child: SIGKILL, no Stop, so its sessions simply die.
func (r *remoteAgent) kill() error {
	if err := syscall.Kill(r.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing %s: %w", r.id, err)
	}
	select {
	case <-r.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not die of SIGKILL within 10s", r.id, r.pid)
	}
}

// stop ends the child politely (EOF on its stdin makes it Stop its
// coordinator and exit), and kills it if it does not exit soon. It is safe
// to call after kill.
func (r *remoteAgent) stop() {
	_ = r.stdin.Close()
	select {
	case <-r.exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(r.pid, syscall.SIGKILL)
	<-r.exited
}

// cmdDemoAgent is the hidden "pgcoord demo-agent": the child process of an
// agent of the demo. It reads demoCommands on stdin, one JSON object a line,
// and answers with agentMessages on stdout; at EOF it stops its coordinator
// and exits.
func cmdDemoAgent(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord demo-agent --agent ID", "Internal: an agent of pgcoord demo, driven by the demo through stdin and stdout.")
	dbURL := dbFlag(fs)
	agent := fs.String("agent", "", "agent id")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	url := strings.TrimSpace(*dbURL)
	if url == "" {
		url = strings.TrimSpace(os.Getenv("DATABASE_URL"))
	}
	if url == "" || *agent == "" {
		// No throwaway server here: the agent must join the demo's database.
		return a.usageError("--agent and a database URL are required")
	}

	var outMu sync.Mutex
	enc := json.NewEncoder(a.stdout)
	send := func(m agentMessage) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(m)
	}
	c, err := newDemoCoordinator(a.ctx, url, *agent)
	if err != nil {
		send(agentMessage{Err: err.Error()})
		return exitError
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	}()
	m := newVolumeManager(c, *agent, func(ev event) { send(agentMessage{Event: &ev}) })
	send(agentMessage{Ready: true})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var cmd demoCommand
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			send(agentMessage{Done: true, Err: fmt.Sprintf("bad command %q: %v", in.Text(), err)})
			continue
		}
		tok, err := m.do(a.ctx, cmd)
		if err != nil {
			send(agentMessage{Done: true, Err: err.Error()})
			continue
		}
		send(agentMessage{Done: true, Token: tok})
	}
	return exitOK
}
