package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type volume struct{ ID string }
type snapshot struct{ Name string }

// Synchronized 1: a bad template takes no lock and does not run fn.
func TestSynchronizedTemplateErrors(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	data := map[string]any{"vol": volume{ID: "v1"}}
	for _, tc := range []struct{ name, more string }{
		{"vol-{vol.missing}", ""},
		{"vol-{nope}", ""},
		{"vol-{vol.id", ""},
		{"vol-{vol.id!r}", ""},
		{"vol-{vol.id:>4}", ""},
		{"ok-{vol.id}", "bad-{}"},
	} {
		ran := false
		var opts []SyncOption
		opts = append(opts, WithCoordinator(c))
		if tc.more != "" {
			opts = append(opts, WithNames(tc.more))
		}
		err := Synchronized(ctx(t), tc.name, data, func(context.Context) error { ran = true; return nil }, opts...)
		require.ErrorIs(t, err, ErrTemplate, tc.name)
		bad := tc.name
		if tc.more != "" {
			bad = tc.more
		}
		require.Contains(t, err.Error(), fmt.Sprintf("%q", bad), "error names the template")
		require.False(t, ran)
	}
	// ok-v1 must not have been taken by the last case.
	mustAcquire(t, newCoord(t, c.cfg.Prefix).GetLock("ok-v1"), NoWait)
}

// Synchronized 1, 4 and the Cinder example: fields of data and f_name.
func TestSynchronizedFormatsNames(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	other := newCoord(t, p)
	data := map[string]any{"vol": &volume{ID: "v7"}, "snap": map[string]string{"name": "s1"}}
	var ran bool
	err := Synchronized(ctx(t), "{f_name}-{vol.id}-{snap[name]}", data, func(context.Context) error {
		ran = true
		requireBusy(t, other.GetLock("TestSynchronizedFormatsNames-v7-s1"))
		return nil
	}, WithCoordinator(c))
	require.NoError(t, err)
	require.True(t, ran)
	err = Synchronized(ctx(t), "{f_name}-{vol.id}-{snap[name]}", data, deleteSnapshot(t, other), WithCoordinator(c))
	require.NoError(t, err)
}

func deleteSnapshot(t *testing.T, other *Coordinator) func(context.Context) error {
	return func(context.Context) error {
		requireBusy(t, other.GetLock("deleteSnapshot-v7-s1"))
		return nil
	}
}

// Synchronized 2: names are de-duplicated and taken in sorted order, so
// opposite orders never deadlock.
func TestSynchronizedSortedNoDeadlock(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c1, c2 := newCoord(t, p), newCoord(t, p)
	var inside atomic.Int32
	var wg sync.WaitGroup
	run := func(c *Coordinator, first, second string) {
		defer wg.Done()
		for range 10 {
			err := Synchronized(ctx(t), first, nil, func(context.Context) error {
				if inside.Add(1) != 1 {
					t.Error("two holders inside")
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				return nil
			}, WithCoordinator(c), WithNames(second, first))
			if err != nil {
				t.Error(err)
			}
		}
	}
	wg.Add(2)
	go run(c1, "a", "b")
	go run(c2, "b", "a")
	wg.Wait()
}

// Synchronized 2, observed directly: with "b" busy elsewhere, names given
// as b, a, z, a are taken as a, b, z: while the wrapper waits for "b", "a"
// is held and "z" is not; the repeated "a" is taken once (a second take
// would find it held and never get in).
func TestSynchronizedOrderAndDedup(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	busy := other.GetLock("b")
	mustAcquire(t, busy, NoWait)
	ran := make(chan struct{}, 2)
	done := make(chan error, 1)
	go func() {
		done <- Synchronized(ctx(t), "z", nil, func(context.Context) error {
			ran <- struct{}{}
			return nil
		}, WithCoordinator(c), WithNames("b", "a", "a"), WithBlocking(Timeout(20*time.Second)))
	}()
	held := func(name string) bool { return heldBy(t, c.GetLock(name).Key()) != 0 }
	require.Eventually(t, func() bool { return held("a") }, 5*time.Second, 5*time.Millisecond,
		`"a" (first in order) is taken while "b" is awaited`)
	require.False(t, held("z"), `"z" (last in order) is not taken before "b"`)
	require.NoError(t, busy.Release(ctx(t)))
	require.NoError(t, <-done)
	require.Len(t, ran, 1)
	for _, n := range []string{"a", "b", "z"} {
		require.False(t, held(n), "%q released after fn", n)
	}
}

// Synchronized 3: a failed acquire releases what was taken, never runs fn,
// and names the lock.
func TestSynchronizedAcquireFailure(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	busy := other.GetLock("b")
	mustAcquire(t, busy, NoWait)
	for _, b := range []Blocking{NoWait, Timeout(200 * time.Millisecond)} {
		ran := false
		err := Synchronized(ctx(t), "a", nil, func(context.Context) error { ran = true; return nil },
			WithCoordinator(c), WithNames("b", "c"), WithBlocking(b))
		require.ErrorIs(t, err, ErrLockAcquireFailed, "%v", b)
		require.Contains(t, err.Error(), `"b"`)
		require.False(t, ran)
		// "a" was taken first (sorted) and must have been released.
		l := other.GetLock("a")
		mustAcquire(t, l, NoWait)
		require.NoError(t, l.Release(ctx(t)))
	}
	// A cancelled context is an acquire failure too, wrapping ctx's error.
	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	err := Synchronized(cctx, "b", nil, func(context.Context) error { return nil }, WithCoordinator(c))
	require.ErrorIs(t, err, ErrLockAcquireFailed)
	require.ErrorIs(t, err, context.Canceled)
}

// Synchronized 4: a lost lock cancels fn's ctx with cause ErrLockLost and
// the result wraps ErrLockLost even though fn returned nil.
func TestSynchronizedLossCancelsFn(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	var cause error
	err := Synchronized(ctx(t), "fragile", nil, func(fctx context.Context) error {
		l := c.GetLock("fragile")
		pid := heldBy(t, l.Key())
		_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
		require.NoError(t, err)
		select {
		case <-fctx.Done():
			cause = context.Cause(fctx)
		case <-time.After(10 * time.Second):
		}
		return nil
	}, WithCoordinator(c))
	require.ErrorIs(t, cause, ErrLockLost)
	require.ErrorIs(t, err, ErrLockLost)
}

// Synchronized 5: a panic releases the locks and goes on.
func TestSynchronizedPanicReleases(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	func() {
		defer func() { require.Equal(t, "boom", recover()) }()
		_ = Synchronized(ctx(t), "p1", nil, func(context.Context) error { panic("boom") },
			WithCoordinator(c), WithNames("p2"))
	}()
	mustAcquire(t, other.GetLock("p1"), NoWait)
	mustAcquire(t, other.GetLock("p2"), NoWait)
}

func TestSynchronizedReturnsFnError(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	want := errors.New("fn failed")
	err := Synchronized(ctx(t), "e", nil, func(context.Context) error { return want }, WithCoordinator(c))
	require.ErrorIs(t, err, want)
	require.NotErrorIs(t, err, ErrLockLost)
}

type volumeOp struct {
	Vol  *volume
	Snap snapshot
}

// Synchronize 6: the template is checked against A when the wrapper is
// built; f_name is the wrapped function's short name.
func TestSynchronize(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	calls := 0
	extend := Synchronize("{f_name}-{vol.id}", extendVolume(t, other, &calls), WithCoordinator(c))
	require.NoError(t, extend(ctx(t), volumeOp{Vol: &volume{ID: "v9"}}))
	require.Equal(t, 1, calls)

	for _, bad := range []string{"{vol.size}", "{volume.id}", "{snap[0]}", "{vol.id", "{f_name!r}"} {
		require.PanicsWithError(t, mustErr(t, bad), func() {
			Synchronize(bad, func(context.Context, volumeOp) error { return nil })
		}, bad)
	}
	// A nil pointer on the path is only known at call time.
	ran := false
	err := Synchronize("{vol.id}", func(context.Context, volumeOp) error { ran = true; return nil },
		WithCoordinator(c))(ctx(t), volumeOp{})
	require.ErrorIs(t, err, ErrTemplate)
	require.False(t, ran)
}

// mustErr returns the panic message Synchronize gives for template bad.
func mustErr(t *testing.T, bad string) (msg string) {
	defer func() {
		r := recover()
		err, ok := r.(error)
		require.True(t, ok, "Synchronize(%q) did not panic with an error: %v", bad, r)
		require.ErrorIs(t, err, ErrTemplate)
		msg = err.Error()
	}()
	Synchronize(bad, func(context.Context, volumeOp) error { return nil })
	return ""
}

func extendVolume(t *testing.T, other *Coordinator, calls *int) func(context.Context, volumeOp) error {
	return func(_ context.Context, op volumeOp) error {
		*calls++
		requireBusy(t, other.GetLock("extendVolume-"+op.Vol.ID))
		return nil
	}
}

func TestSynchronizedNeedsCoordinator(t *testing.T) {
	// Not parallel: it touches the default coordinator.
	prev := Default()
	SetDefault(nil)
	defer SetDefault(prev)
	err := Synchronized(ctx(t), "x", nil, func(context.Context) error { return nil })
	require.ErrorIs(t, err, ErrLockAcquireFailed)
	require.ErrorIs(t, err, ErrNotStarted)

	c := newCoord(t, testPrefix(t))
	SetDefault(c)
	require.Same(t, c, Default())
	ran := false
	require.NoError(t, Synchronized(ctx(t), "x", nil, func(context.Context) error { ran = true; return nil }))
	require.True(t, ran)
	l, err := NewLock("vol-{id}", map[string]int{"id": 3}, nil)
	require.NoError(t, err)
	require.Equal(t, "vol-3", l.Name())
}

type volumeManager struct{}

func (volumeManager) DeleteVolume(context.Context, volumeOp) error { return nil }

func genericOp[T any](context.Context, T) error { return nil }

func TestFuncName(t *testing.T) {
	t.Parallel()
	var m volumeManager
	nested := func() func() { return func() {} }
	for _, tc := range []struct {
		fn   any
		want string
	}{
		{m.DeleteVolume, "DeleteVolume"},
		{volumeManager.DeleteVolume, "DeleteVolume"},
		{TestFuncName, "TestFuncName"},
		{deleteSnapshot(t, nil), "deleteSnapshot"},
		{nested(), "TestFuncName"},
		{genericOp[int], "genericOp"},
	} {
		require.Equal(t, tc.want, funcName(tc.fn))
	}
}
