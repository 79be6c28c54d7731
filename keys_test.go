package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/db"
	"github.com/pgcoord/pgcoord/internal/hash"
)

// Go and SQL agree on every key: a DBA's pgcoord.lock_key(name) finds the
// lock a service holds. The Go side is pinned in internal/hash.
func TestLockKeyGoMatchesSQL(t *testing.T) {
	t.Parallel()
	names := []string{"", "a", "volume-1", "pgcoord", "日本語のロック", "emoji-🔒", strings.Repeat("x", MaxNameLen)}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]rune, r.IntN(64)+1)
		for i := range b {
			b[i] = rune(r.IntN(0x2000) + 1)
		}
		names = append(names, string(b))
	}
	q := db.New()
	for _, n := range names {
		got, err := q.LockKey(ctx(t), testPool, n)
		require.NoError(t, err)
		require.Equal(t, hash.Key(n), got, "name %q", n)
	}
}

func TestLockKeyIsOfFullName(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	l := c.GetLock("vol-1")
	require.Equal(t, "vol-1", l.Name())
	require.Equal(t, hash.Key(p+"vol-1"), l.Key())
	mustAcquire(t, l, NoWait)
	var name string
	require.NoError(t, testPool.QueryRow(ctx(t),
		`SELECT name FROM pgcoord.held_locks WHERE key = pgcoord.lock_key($1)`, p+"vol-1").Scan(&name))
	require.Equal(t, p+"vol-1", name)
}

// Two names never share a lock: a name whose key is registered to another
// name is refused. A real SHA-256 collision cannot be produced, so the test
// plants a registry row as one would look.
func TestKeyCollisionRefused(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	l := c.GetLock("victim")
	_, err := testPool.Exec(ctx(t), `INSERT INTO pgcoord.locks (key, name) VALUES ($1, $2)`, l.Key(), p+"impostor")
	require.NoError(t, err)
	ok, err := l.Acquire(ctx(t), NoWait)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrKeyCollision)
	require.Contains(t, err.Error(), "impostor")
	// Nothing is held and the name is still usable once the row is fixed.
	require.Zero(t, heldBy(t, l.Key()))
	_, err = testPool.Exec(ctx(t), `DELETE FROM pgcoord.locks WHERE key = $1`, l.Key())
	require.NoError(t, err)
	mustAcquire(t, l, NoWait)
}

// Many coordinators registering one new name at once: all agree, one row.
func TestRegistryConcurrentFirstUse(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	coords := []*Coordinator{newCoord(t, p), newCoord(t, p), newCoord(t, p)}
	errs := make(chan error, len(coords))
	for _, c := range coords {
		go func() {
			l := c.GetLock("fresh")
			_, err := l.Acquire(context.Background(), Timeout(5e9))
			if err == nil {
				err = l.Release(context.Background())
			}
			errs <- err
		}()
	}
	for range coords {
		require.NoError(t, <-errs)
	}
	var n int
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.locks WHERE name = $1`, p+"fresh").Scan(&n))
	require.Equal(t, 1, n)
}

func TestBadLockNames(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	for _, tc := range []struct {
		desc, name string
	}{
		{"empty", ""},
		{"too long", strings.Repeat("n", MaxNameLen)}, // with the prefix it is over
		{"not UTF-8", "bad-\xff"},
		{"NUL byte", "a\x00b"},
	} {
		ok, err := c.GetLock(tc.name).Acquire(ctx(t), NoWait)
		require.False(t, ok, tc.desc)
		require.ErrorIs(t, err, ErrInvalidName, tc.desc)
		_, err = NewLock(tc.name, nil, c)
		// As a template, bad UTF-8 is already a template error.
		require.True(t, errors.Is(err, ErrInvalidName) || errors.Is(err, ErrTemplate), "%s: %v", tc.desc, err)
	}
	// Templates that format to an empty name.
	_, err := NewLock("{x}", map[string]string{"x": ""}, c)
	require.ErrorIs(t, err, ErrInvalidName)
	// A long but valid name (1,024 bytes of multi-byte UTF-8) works.
	long := strings.Repeat("é", 512)
	l, err := NewLock(long, nil, c)
	require.NoError(t, err)
	mustAcquire(t, l, NoWait)
	require.NoError(t, l.Release(ctx(t)))
}

// A template formats to the same name in every process given the same
// values. A value fmt.Sprint prints with a memory address in it (here a
// struct holding a pointer) would give two coordinators locking one
// volume two different names, and both would hold "it" at once: it is
// ErrTemplate, before any I/O.
func TestTemplateNameHasNoAddress(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	type host struct{ Name string }
	type vol struct {
		ID   string
		Host *host
	}
	// Each process builds its own copy of the same volume.
	la, errA := NewLock("vol-{v}", map[string]any{"v": vol{"v1", &host{"h1"}}}, a)
	lb, errB := NewLock("vol-{v}", map[string]any{"v": vol{"v1", &host{"h1"}}}, b)
	if errA == nil && errB == nil {
		okA, err := la.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		okB, err := lb.Acquire(ctx(t), NoWait)
		require.NoError(t, err)
		t.Fatalf("names %q and %q for one volume; both held: %v, %v", la.Name(), lb.Name(), okA, okB)
	}
	require.ErrorIs(t, errA, ErrTemplate)
	require.ErrorIs(t, errB, ErrTemplate)
	err := Synchronized(ctx(t), "vol-{v}", map[string]any{"v": vol{"v1", &host{"h1"}}},
		func(context.Context) error { t.Fatal("ran"); return nil }, WithCoordinator(a))
	require.ErrorIs(t, err, ErrTemplate)
	// The same value named by its fields works.
	la, err = NewLock("vol-{v.id}-{v.host.name}", map[string]any{"v": vol{"v1", &host{"h1"}}}, a)
	require.NoError(t, err)
	require.Equal(t, "vol-v1-h1", la.Name())
}

// Two coordinators of different prefixes register, at the same moment, two
// different names forged to one key: whatever the interleaving, exactly one
// name owns the key and the other is refused with ErrKeyCollision; never
// do both hold it. (A real SHA-256 collision cannot be made: the second
// Lock's key is overwritten.)
func TestConcurrentCollidingRegistrations(t *testing.T) {
	t.Parallel()
	pa, pb := testPrefix(t), testPrefix(t)
	a, b := newCoord(t, pa), newCoord(t, pb)
	for round := range 40 {
		la := a.GetLock(fmt.Sprintf("x-%d", round))
		lb := b.GetLock(fmt.Sprintf("y-%d", round))
		lb.key = la.key
		start := make(chan struct{})
		type result struct {
			ok  bool
			err error
		}
		res := make([]chan result, 2)
		for i, l := range []*Lock{la, lb} {
			res[i] = make(chan result, 1)
			go func() {
				<-start
				ok, err := l.Acquire(context.Background(), NoWait)
				res[i] <- result{ok, err}
			}()
		}
		close(start)
		ra, rb := <-res[0], <-res[1]
		var owner string
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT name FROM pgcoord.locks WHERE key = $1`, la.key).Scan(&owner))
		switch owner {
		case pa + la.Name():
			require.NoError(t, ra.err, "round %d", round)
			require.True(t, ra.ok, "round %d", round)
			require.ErrorIs(t, rb.err, ErrKeyCollision, "round %d", round)
			require.NoError(t, la.Release(ctx(t)))
		case pb + lb.Name():
			require.NoError(t, rb.err, "round %d", round)
			require.True(t, rb.ok, "round %d", round)
			require.ErrorIs(t, ra.err, ErrKeyCollision, "round %d", round)
			require.NoError(t, lb.Release(ctx(t)))
		default:
			t.Fatalf("round %d: key owned by %q", round, owner)
		}
	}
}
