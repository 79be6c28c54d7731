package chaostest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"

	"github.com/pgcoord/pgcoord/internal/chaos"
)

// Chaos holders in child processes, so that the chaos test can SIGKILL a
// holder and freeze one with SIGSTOP. The child is this test binary run with
// -test.run=^TestChaosChild$ and chaosChildEnv set; it reports each critical
// section on stdout (wall-clock UnixNano: same machine, same clock) and
// stops when its stdin closes.

const (
	chaosChildEnv      = "PGCOORD_CHAOS_CHILD"
	chaosChildURLEnv   = "PGCOORD_CHAOS_URL"
	chaosChildNamesEnv = "PGCOORD_CHAOS_NAMES"
)

// TestChaosChild is the body of a chaos child process; in a normal test run
// (chaosChildEnv unset) it does nothing.
func TestChaosChild(t *testing.T) {
	agent := os.Getenv(chaosChildEnv)
	if agent == "" {
		return
	}
	names, err := strconv.Atoi(os.Getenv(chaosChildNamesEnv))
	require.NoError(t, err)
	c, err := pgcoord.New(chaosConfig(os.Getenv(chaosChildURLEnv), agent))
	require.NoError(t, err)
	// The parent injects no fault until it reads "chaos-started": a failed
	// Start is not what this test is about.
	require.NoError(t, c.Start(context.Background()))

	runCtx, cancel := context.WithCancel(context.Background())
	go func() {
		// The parent closes stdin to end the run.
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	sink := &pipeSink{w: bufio.NewWriter(os.Stdout)}
	sink.line("chaos-started")
	go watchStalls(runCtx, func(from, to time.Time) {
		sink.line(fmt.Sprintf("chaos-stall %d %d", from.UnixNano(), to.UnixNano()))
	})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(w)))
			for runCtx.Err() == nil {
				name := "n" + strconv.Itoa(rng.IntN(names))
				if chaosHold(runCtx, c, name, rng, sink, nil) == holdErr {
					sleepCtx(runCtx, 20*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = c.Stop(sctx)
}

// pipeSink writes sections to the parent, one line each, flushed at once.
type pipeSink struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (p *pipeSink) Enter(s chaos.Section) {
	p.line(fmt.Sprintf("chaos-enter %s %d %d %s", s.Lock, s.Token, s.Enter.UnixNano(), s.Session))
}

func (p *pipeSink) Leaving(s chaos.Section) { p.finished("chaos-leaving", s) }

func (p *pipeSink) Exit(s chaos.Section) { p.finished("chaos-exit", s) }

// finished writes a section that has its Exit, under verb.
func (p *pipeSink) finished(verb string, s chaos.Section) {
	var told int64
	if !s.Told.IsZero() {
		told = s.Told.UnixNano()
	}
	// The cause, last, is the rest of the line (it has spaces).
	p.line(strings.TrimSpace(fmt.Sprintf("%s %s %d %d %d %d %s %s", verb, s.Lock, s.Token, s.Enter.UnixNano(), s.Exit.UnixNano(), told, s.Session,
		strings.Join(strings.Fields(s.Cause), " "))))
}

func (p *pipeSink) line(l string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = p.w.WriteString(l + "\n")
	_ = p.w.Flush()
}

// chaosChild is the parent's handle on one child process.
type chaosChild struct {
	member string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	// started is closed when the child says its coordinator started.
	started chan struct{}
	// done is closed when the child's stdout is drained and it was waited
	// for; open sections are journaled by then.
	done chan struct{}

	mu sync.Mutex
	// open are the sections the child entered and has not reported done.
	open map[string]chaos.Section
	// killedAt is when the parent sent SIGKILL; zero if it did not.
	killedAt time.Time
	exitErr  error
}

// startChaosChild starts a child holding locks through url as member
// agent, journaling its sections in j, and waits until its coordinator
// has started.
func startChaosChild(t *testing.T, agent, url string, names int, j *chaos.Journal) *chaosChild {
	cmd := exec.Command(os.Args[0], "-test.run=^TestChaosChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		chaosChildEnv+"="+agent,
		chaosChildURLEnv+"="+url,
		chaosChildNamesEnv+"="+strconv.Itoa(names),
		// The child's TestMain then uses the shared test server instead of
		// starting a server of its own.
		"PGCOORD_TEST_DATABASE_URL="+testURL,
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	ch := &chaosChild{member: agent, cmd: cmd, stdin: stdin, started: make(chan struct{}), done: make(chan struct{}),
		open: map[string]chaos.Section{}}
	go func() {
		defer close(ch.done)
		in := bufio.NewScanner(stdout)
		for in.Scan() {
			ch.parse(in.Text(), j)
		}
		err := cmd.Wait()
		ch.mu.Lock()
		defer ch.mu.Unlock()
		ch.exitErr = err
		// Sections still open died with the process: they end at the
		// SIGKILL (a killed process does nothing after it), or, if the
		// child died by itself, now; a section the child was leaving
		// (its release under way) ends at its own Exit, if sooner.
		end := ch.killedAt
		if end.IsZero() {
			end = time.Now()
		}
		for _, s := range ch.open {
			if s.Exit.IsZero() || s.Exit.After(end) {
				s.Exit = end
			}
			if s.Exit.Before(s.Enter) {
				s.Exit = s.Enter
			}
			j.Record(s)
		}
		ch.open = nil
	}()
	select {
	case <-ch.started:
	case <-ch.done:
		t.Errorf("chaos child %s ended before it started: %v", agent, ch.exitErr)
	case <-time.After(60 * time.Second):
		t.Errorf("chaos child %s did not start", agent)
	}
	return ch
}

// parse handles one line of the child's stdout; lines of the test framework
// ("PASS") are ignored.
func (ch *chaosChild) parse(line string, j *chaos.Journal) {
	f := strings.Fields(line)
	nums := func(from, to int) []int64 {
		var out []int64
		for _, s := range f[from:to] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil
			}
			out = append(out, n)
		}
		return out
	}
	at := func(n int64) time.Time {
		if n == 0 {
			return time.Time{}
		}
		return time.Unix(0, n)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	switch {
	case len(f) == 1 && f[0] == "chaos-started":
		close(ch.started)
	case len(f) == 5 && f[0] == "chaos-enter":
		if n := nums(2, 4); n != nil {
			ch.open[f[1]+" "+f[2]] = chaos.Section{Lock: f[1], Token: n[0], Member: ch.member, Session: f[4], Enter: at(n[1])}
		}
	case len(f) == 3 && f[0] == "chaos-stall":
		if n := nums(1, 3); n != nil {
			j.Stall(chaos.Stall{Proc: ch.member, Members: []string{ch.member}, From: at(n[0]), To: at(n[1])})
		}
	case len(f) >= 7 && f[0] == "chaos-leaving":
		// Still open (its Exit line may follow, with a late Told), but
		// it ends here if the process dies first.
		if n := nums(2, 6); n != nil {
			if s, ok := ch.open[f[1]+" "+f[2]]; ok {
				s.Exit, s.Told = at(n[2]), at(n[3])
				ch.open[f[1]+" "+f[2]] = s
			}
		}
	case len(f) >= 7 && f[0] == "chaos-exit":
		if n := nums(2, 6); n != nil {
			delete(ch.open, f[1]+" "+f[2])
			j.Record(chaos.Section{Lock: f[1], Token: n[0], Member: ch.member, Session: f[6],
				Enter: at(n[1]), Exit: at(n[2]), Told: at(n[3]), Cause: strings.Join(f[7:], " ")})
		}
	}
}

// kill sends SIGKILL and notes when.
func (ch *chaosChild) kill() time.Time {
	ch.mu.Lock()
	ch.killedAt = time.Now()
	at := ch.killedAt
	ch.mu.Unlock()
	_ = ch.cmd.Process.Signal(syscall.SIGKILL)
	return at
}

// stop asks the child to finish (closing its stdin) and waits for it.
func (ch *chaosChild) stop(t *testing.T) {
	_ = ch.stdin.Close()
	select {
	case <-ch.done:
	case <-time.After(30 * time.Second):
		t.Errorf("chaos child %s did not stop; killing it", ch.member)
		ch.kill()
		<-ch.done
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.killedAt.IsZero() && ch.exitErr != nil {
		t.Errorf("chaos child %s failed: %v", ch.member, ch.exitErr)
	}
}
