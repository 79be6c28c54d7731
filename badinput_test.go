package pgcoord

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// One table of bad inputs across names, templates, config, connection
// strings, server states and misuse: each gets the typed error a user would
// expect, and nothing is lost (a witness lock held throughout stays held).
func TestBadInputsTable(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	other := newCoord(t, p)
	witness := c.GetLock("witness")
	mustAcquire(t, witness, NoWait)
	held := c.GetLock("held")
	mustAcquire(t, held, NoWait)
	stopped, err := New(Config{ConnString: testURL, Prefix: p + "stopped/", SkipMigrations: true, Logger: quietLogger()})
	require.NoError(t, err)
	require.NoError(t, stopped.Start(ctx(t)))
	require.NoError(t, stopped.Stop(ctx(t)))
	notStarted, err := New(Config{ConnString: testURL, Logger: quietLogger()})
	require.NoError(t, err)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	noop := func(context.Context) error { return nil }
	acq := func(l *Lock, b Blocking) error { _, err := l.Acquire(ctx(t), b); return err }
	newCfg := func(cfg Config) error { _, err := New(cfg); return err }
	newLock := func(name string, data any) error { _, err := NewLock(name, data, c); return err }
	sync := func(name string, data any, opts ...SyncOption) error {
		return Synchronized(ctx(t), name, data, noop, append(opts, WithCoordinator(c))...)
	}

	cases := []struct {
		desc string
		run  func() error
		want error
	}{
		// Names.
		{"empty name", func() error { return acq(c.GetLock(""), NoWait) }, ErrInvalidName},
		{"name too long", func() error { return acq(c.GetLock(strings.Repeat("x", MaxNameLen+1)), NoWait) }, ErrInvalidName},
		{"name not UTF-8", func() error { return acq(c.GetLock("\xc3\x28"), NoWait) }, ErrInvalidName},
		{"name with NUL", func() error { return acq(c.GetLock("a\x00b"), NoWait) }, ErrInvalidName},
		{"template formats to empty", func() error { return newLock("{x}", map[string]string{"x": ""}) }, ErrInvalidName},
		// Templates.
		{"unclosed brace", func() error { return newLock("vol-{id", nil) }, ErrTemplate},
		{"lone closing brace", func() error { return newLock("vol-}", nil) }, ErrTemplate},
		{"empty field", func() error { return newLock("vol-{}", nil) }, ErrTemplate},
		{"positional field", func() error { return newLock("vol-{0}", []string{"a"}) }, ErrTemplate},
		{"conversion !r", func() error { return newLock("{id!r}", map[string]int{"id": 1}) }, ErrTemplate},
		{"format spec", func() error { return newLock("{id:>5}", map[string]int{"id": 1}) }, ErrTemplate},
		{"unknown field", func() error { return newLock("{nope}", map[string]int{"id": 1}) }, ErrTemplate},
		{"nil pointer on path", func() error { return newLock("{v.id}", map[string]*volume{"v": nil}) }, ErrTemplate},
		{"index out of range", func() error { return newLock("{v[3]}", map[string][]int{"v": {1}}) }, ErrTemplate},
		{"missing map key", func() error { return newLock("{m[k]}", map[string]map[string]int{"m": {}}) }, ErrTemplate},
		{"Synchronized bad template", func() error { return sync("{a.b}", map[string]int{"a": 1}) }, ErrTemplate},
		{"Synchronized bad extra template", func() error { return sync("ok", nil, WithNames("{")) }, ErrTemplate},
		// Config and connection strings.
		{"no connection", func() error { return newCfg(Config{}) }, ErrInvalidConfig},
		{"negative heartbeat", func() error { return newCfg(Config{ConnString: testURL, HeartbeatInterval: -1}) }, ErrInvalidConfig},
		{"initial backoff above max", func() error {
			return newCfg(Config{ConnString: testURL, InitialReconnectBackoff: time.Hour, MaxReconnectBackoff: time.Minute})
		}, ErrInvalidConfig},
		{"session timeout too short", func() error {
			return newCfg(Config{ConnString: testURL, HeartbeatInterval: time.Second, SessionTimeout: time.Second})
		}, ErrInvalidConfig},
		{"bad URL", func() error { return newCfg(Config{ConnString: "postgres://a:b@[::1/x"}) }, ErrInvalidConfig},
		{"bad key=value", func() error { return newCfg(Config{ConnString: "host='unterminated"}) }, ErrInvalidConfig},
		{"bad sslmode", func() error { return newCfg(Config{ConnString: testURL + "&sslmode=maybe"}) }, ErrInvalidConfig},
		{"Migrate bad URL", func() error { return Migrate(ctx(t), "postgres://%zz") }, ErrInvalidConfig},
		// Server states and misuse.
		{"acquire before Start", func() error { return acq(notStarted.GetLock("x"), NoWait) }, ErrNotStarted},
		{"acquire after Stop", func() error { return acq(stopped.GetLock("x"), Wait) }, ErrNotStarted},
		{"Synchronized after Stop", func() error {
			return Synchronized(ctx(t), "x", nil, noop, WithCoordinator(stopped))
		}, ErrNotStarted},
		{"Heartbeat after Stop", func() error { return stopped.Heartbeat(ctx(t)) }, ErrNotStarted},
		{"Start after Stop", func() error { return stopped.Start(ctx(t)) }, ErrNotStarted},
		{"release never acquired", func() error { return c.GetLock("never").Release(ctx(t)) }, ErrNotHeld},
		{"acquire twice", func() error { return acq(held, NoWait) }, ErrAlreadyHeld},
		{"acquire with cancelled ctx", func() error { _, err := c.GetLock("y").Acquire(cancelled, Wait); return err }, context.Canceled},
		{"Synchronized with cancelled ctx", func() error {
			return Synchronized(cancelled, "z", nil, noop, WithCoordinator(c))
		}, ErrLockAcquireFailed},
		{"busy under NoWait in Synchronized", func() error {
			return Synchronized(ctx(t), "held", nil, noop, WithCoordinator(other), WithBlocking(NoWait))
		}, ErrLockAcquireFailed},
		{"second live member", func() error {
			dup, err := New(Config{ConnString: testURL, Prefix: p, AgentID: strings.TrimPrefix(c.MemberID(), p), SkipMigrations: true, Logger: quietLogger()})
			require.NoError(t, err)
			return dup.Start(ctx(t))
		}, ErrMemberExists},
	}
	require.GreaterOrEqual(t, len(cases), 30)
	for _, tc := range cases {
		err := tc.run()
		require.Error(t, err, tc.desc)
		require.True(t, errors.Is(err, tc.want), "%s: got %v, want %v", tc.desc, err, tc.want)
		select {
		case <-witness.Lost():
			t.Fatalf("%s cost the witness its hold", tc.desc)
		default:
		}
	}
	requireBusy(t, other.GetLock("witness"))
	require.NoError(t, held.Release(ctx(t)))
	require.ErrorIs(t, held.Release(ctx(t)), ErrNotHeld, "double release")
	require.NoError(t, witness.Release(ctx(t)))
	require.NoError(t, stopped.Stop(ctx(t)), "double Stop")
}
