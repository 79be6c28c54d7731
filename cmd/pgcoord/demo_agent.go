package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord"
)

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
