package hatest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord"
	"github.com/pgcoord/pgcoord/internal/chaos"
)

const (
	// workHB is the heartbeat of the workload's coordinators; the checker
	// allows a holder to learn of a loss two of them after the fault (SPEC
	// section 5).
	workHB = 250 * time.Millisecond
	// workNames is how many names the workload contends on (shared by
	// both routes of a case).
	workNames = 4
	// heldPerRoute is how many locks each route's measuring coordinator
	// holds through the fault.
	heldPerRoute = 3
)

// route is one way to the leader (HAProxy, or a multi-host string) and
// the coordinators that use it in a case: a measuring coordinator with the
// default Config (ConnString, Prefix and Logger aside) that holds locks
// through the fault and then acquires until it succeeds, and a workload of
// coordinators that take and release contended names, journaled for the
// chaos checker.
type route struct {
	name    string
	url     string
	measure *pgcoord.Coordinator
	log     logRecorder // the measuring coordinator's
	workers []*pgcoord.Coordinator
	journal chaos.Journal // this route's sections

	held []heldLock
	// firstAny is the first successful Acquire after the fault, on
	// whichever server; first is the first on the new leader (a token of
	// a later timeline than the holds before the fault).
	firstAny     time.Time
	first        time.Time
	firstToken   int64
	refusals     int
	lastRefusal  error
	firstRefusal error
}

// heldLock is a hold taken before the fault, with when it was told lost.
type heldLock struct {
	l     *pgcoord.Lock
	token int64
	told  time.Time
}

// newRoute starts the route's coordinators on url with prefix.
func newRoute(t *testing.T, name, url, prefix string, workers int) *route {
	r := &route{name: name, url: url}
	r.measure = startCoord(t, pgcoord.Config{ConnString: url, Prefix: prefix, AgentID: name + "-measure", Logger: slog.New(r.log.handler()), SkipMigrations: true})
	for i := range workers {
		r.workers = append(r.workers, startCoord(t, pgcoord.Config{
			ConnString: url, Prefix: prefix, AgentID: name + "-work-" + strconv.Itoa(i), Logger: quietLogger(), SkipMigrations: true,
			HeartbeatInterval: workHB, SessionTimeout: 3 * time.Second,
		}))
	}
	return r
}

func startCoord(t *testing.T, cfg pgcoord.Config) *pgcoord.Coordinator {
	t.Helper()
	c, err := pgcoord.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx(t)))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(sctx)
	})
	return c
}

// hold takes the measuring coordinator's locks for the fault, and
// registers the name of the first acquire after it (a name used before,
// as a service's are), and watches each hold's loss signal.
func (r *route) hold(t *testing.T) {
	for i := range heldPerRoute {
		l := r.measure.GetLock(fmt.Sprintf("held-%s-%d", r.name, i))
		ok, err := l.Acquire(ctx(t), pgcoord.NoWait)
		require.NoError(t, err)
		require.True(t, ok)
		r.held = append(r.held, heldLock{l: l, token: l.Token()})
	}
	first := r.measure.GetLock("first-" + r.name)
	ok, err := first.Acquire(ctx(t), pgcoord.NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, first.Release(ctx(t)))
}

// watchLosses timestamps each hold's Lost as it closes, until ctx ends.
func (r *route) watchLosses(ctx context.Context, wg *sync.WaitGroup) {
	for i := range r.held {
		h := &r.held[i]
		wg.Go(func() {
			select {
			case <-h.l.Lost():
				h.told = time.Now()
			case <-ctx.Done():
			}
		})
	}
}

// acquireFirst tries the first name from the fault on, as a caller
// would (NoWait, a few milliseconds apart), until it is acquired on the new
// leader (a token of a later timeline: Patroni promotes onto a new one)
// or ctx ends. Acquires on the old primary, before it stops, are released
// and retried.
func (r *route) acquireFirst(ctx context.Context) {
	l := r.measure.GetLock("first-" + r.name)
	timeline := r.held[0].token >> 48
	// Refusals go into the coordinator's log timeline (see check), one
	// record per run of the same error: when each began, how long it
	// took to be refused, and how many followed.
	var run struct {
		text   string
		repeat int
	}
	for ctx.Err() == nil {
		began := time.Now()
		ok, err := l.Acquire(ctx, pgcoord.NoWait)
		if ok {
			now, tok := time.Now(), l.Token()
			_ = l.Release(context.Background())
			if r.firstAny.IsZero() {
				r.firstAny = now
			}
			r.log.note(now, "acquired", slog.Int64("timeline", tok>>48), slog.Duration("took", now.Sub(began)), slog.Int("after_refusals_like_the_last", run.repeat))
			run.text, run.repeat = "", 0
			if tok>>48 > timeline {
				r.first, r.firstToken = now, tok
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err == nil {
			err = errors.New("busy")
		}
		if r.refusals == 0 {
			r.firstRefusal = err
		}
		r.refusals++
		r.lastRefusal = err
		if text := refusalKind(err); text != run.text {
			r.log.note(began, "acquire refused", slog.Duration("took", time.Since(began)), slog.Int("after_refusals_like_the_last", run.repeat), slog.String("err", strings.Join(strings.Fields(err.Error()), " ")))
			run.text, run.repeat = text, 0
		} else {
			run.repeat++
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refusalKind is an error's text without its addresses, ports and pids
// (they vary from one refusal to the next), on one line.
func refusalKind(err error) string {
	text := strings.Join(strings.Fields(err.Error()), " ")
	return digits.ReplaceAllString(text, "N")
}

var digits = regexp.MustCompile(`[0-9]+`)

// work runs the route's workload until ctx ends: each worker takes one of
// the contended names (NoWait or a short timeout), holds it briefly (now
// and then for a while, so that faults hit holders), watching Lost, and
// journals the section in the route's and the case's journal.
func (r *route) work(ctx context.Context, wg *sync.WaitGroup, all *chaos.Journal) {
	for ci, c := range r.workers {
		for w := range 2 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(w)))
				for ctx.Err() == nil {
					workStep(ctx, c, rng, &r.journal, all)
				}
			})
		}
	}
}

func workStep(ctx context.Context, c *pgcoord.Coordinator, rng *rand.Rand, journals ...*chaos.Journal) {
	name := "w" + strconv.Itoa(rng.IntN(workNames))
	l := c.GetLock(name)
	b := pgcoord.NoWait
	if rng.IntN(2) == 0 {
		b = pgcoord.Timeout(time.Duration(50+rng.IntN(200)) * time.Millisecond)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	ok, err := l.Acquire(actx, b)
	cancel()
	if err != nil {
		sleep(ctx, 20*time.Millisecond)
		return
	}
	if !ok {
		sleep(ctx, time.Duration(rng.IntN(5))*time.Millisecond)
		return
	}
	s := chaos.Section{Lock: name, Token: l.Token(), Member: c.MemberID(), Session: "pid:" + strconv.Itoa(int(l.BackendPID())), Enter: time.Now()}
	d := time.Duration(rng.IntN(10)) * time.Millisecond
	if rng.IntN(10) == 0 {
		d = time.Duration(100+rng.IntN(400)) * time.Millisecond
	}
	hold := time.NewTimer(d)
	select {
	case <-l.Lost():
		s.Told = time.Now()
		s.Exit = s.Told
		hold.Stop()
		_ = l.Release(context.Background())
	case <-hold.C:
		s.Exit = time.Now()
		if err := l.Release(context.Background()); errors.Is(err, pgcoord.ErrLockLost) {
			s.Told = time.Now()
		}
	}
	for _, j := range journals {
		j.Record(s)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// maxTokenBefore is the largest token of a section entered before at, or
// of a hold taken before the fault.
func (r *route) maxTokenBefore(at time.Time) int64 {
	var top int64
	for _, h := range r.held {
		top = max(top, h.token)
	}
	for _, s := range r.journal.Sections() {
		if s.Enter.Before(at) {
			top = max(top, s.Token)
		}
	}
	return top
}

// minTokenAfter is the smallest token of a section entered at or after at
// (0 when none was).
func (r *route) minTokenAfter(at time.Time) int64 {
	var low int64
	for _, s := range r.journal.Sections() {
		if !s.Enter.Before(at) && (low == 0 || s.Token < low) {
			low = s.Token
		}
	}
	return low
}
