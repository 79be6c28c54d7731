package pgcoord

import (
	"context"

	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// TestFirstTokensAboveTimelineFloor: on a new server the fencing sequence
// starts below the floor of its timeline (timeline << 48), so the first
// tries' candidates (a plain nextval, see the TryLock query) are below it,
// and the client must swap them for RaiseTokenFloor's, alone and in a batch
// of concurrent tries. Every token is then above the floor and distinct.
func TestFirstTokensAboveTimelineFloor(t *testing.T) {
	srv := ownServer(t, nil)
	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = srv.URL() })
	const floor = int64(1) << 48 // a new server writes on timeline 1

	const n = 32
	locks := make([]*Lock, n)
	var wg sync.WaitGroup
	for i := range locks {
		locks[i] = c.GetLock(fmt.Sprintf("floor-%d", i))
		wg.Go(func() {
			ok, err := locks[i].Acquire(ctx(t), NoWait)
			require.NoError(t, err)
			require.True(t, ok)
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, l := range locks {
		tok := l.Token()
		require.Greater(t, tok, floor, "token of %s", l.Name())
		require.False(t, seen[tok], "token %d given twice", tok)
		seen[tok] = true
		require.NoError(t, l.Release(ctx(t)))
	}
	shared := c.GetLock("floor-shared")
	mustAcquire(t, shared, NoWait)
	require.Greater(t, shared.Token(), floor)
}

// TestWaitTokenAboveTimelineFloor: a wait granted on a wait session (and a
// shared one) whose token candidate is below the timeline floor gets a
// token above it. The sequence is moved below the floor by hand, as a
// promoted standby's copy lags its old primary's.
func TestWaitTokenAboveTimelineFloor(t *testing.T) {
	srv := ownServer(t, nil)
	url := func(cfg *Config) { cfg.ConnString = srv.URL() }
	p := testPrefix(t)
	holder, waiter := newCoord(t, p, url), newCoord(t, p, url)
	admin := connect(t, srv.URL())
	const floor = int64(1) << 48

	for _, shared := range []bool{false, true} {
		h := holder.GetLock("wait-floor")
		mustAcquire(t, h, NoWait)
		_, err := admin.Exec(ctx(t), `SELECT setval('pgcoord.fencing_token', 5)`)
		require.NoError(t, err)
		w := waiter.GetLock("wait-floor")
		got := make(chan error, 1)
		go func() {
			acquire := w.Acquire
			if shared {
				acquire = w.AcquireShared
			}
			ok, err := acquire(ctx(t), Timeout(10*time.Second))
			if err == nil && !ok {
				err = fmt.Errorf("not acquired")
			}
			got <- err
		}()
		require.Eventually(t, func() bool {
			var n int
			require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.held_locks WHERE key = $1 AND NOT granted`, w.Key()).Scan(&n))
			return n > 0
		}, 5*time.Second, 5*time.Millisecond)
		require.NoError(t, h.Release(ctx(t)))
		require.NoError(t, <-got)
		require.Greater(t, w.Token(), floor, "shared=%v", shared)
		require.NoError(t, w.Release(ctx(t)))
	}
}

// TestTokensIncreaseAfterCrash: a server that crashes (no failover: the
// same timeline, so no floor helps) must not hand out again the tokens it
// gave before, nor forget the fence recorded last, even when it runs with
// synchronous_commit = off (as pgtemp's servers do, and as servers tuned
// for throughput may). nextval WAL-logs the sequence 32 values ahead, and
// a commit under synchronous_commit = off returns before that record is
// written: a crash then moved the sequence back below tokens already
// issued, and a fence row's last update could be lost with it, so a write
// guarded by an older holder's token would land again.
func TestTokensIncreaseAfterCrash(t *testing.T) {
	srv := ownServer(t, nil)
	var setting string
	admin := connect(t, srv.URL())
	require.NoError(t, admin.QueryRow(ctx(t), `SHOW synchronous_commit`).Scan(&setting))
	require.Equal(t, "off", setting, "the server must run without synchronous commit for this test")
	require.NoError(t, admin.Close(ctx(t)))

	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = srv.URL(); cfg.Fencing = true })
	l := c.GetLock("crash")
	var last int64
	for range 100 {
		mustAcquire(t, l, NoWait)
		last = l.Token()
		require.NoError(t, l.Release(ctx(t)))
	}
	require.NoError(t, srv.StopImmediate())
	require.NoError(t, srv.StartServer())

	var fenced int64
	require.Eventually(t, func() bool {
		conn, err := pgx.Connect(ctx(t), srv.URL())
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		return conn.QueryRow(ctx(t), `SELECT token FROM pgcoord.fences WHERE key = $1`, l.Key()).Scan(&fenced) == nil
	}, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, last, fenced, "the fence recorded last before the crash")

	var tok int64
	require.Eventually(t, func() bool {
		ok, _ := l.Acquire(ctx(t), NoWait)
		if ok {
			tok = l.Token()
			_ = l.Release(ctx(t))
		}
		return ok && tok != 0
	}, 20*time.Second, 10*time.Millisecond)
	require.Greater(t, tok, last, "the first token after the crash")
}

// TestFencedTxTokensIncreaseAfterCrash is TestTokensIncreaseAfterCrash for
// AcquireFencedTx, whose token is taken and recorded in the application's
// own transaction: committed under the server's synchronous_commit = off,
// a crash took back the sequence's advance and the fence row with it, and
// the next AcquireFencedTx got a token already handed out.
func TestFencedTxTokensIncreaseAfterCrash(t *testing.T) {
	srv := ownServer(t, nil)
	p := testPrefix(t)
	// A coordinator migrates the schema; the transactions are the app's.
	newCoord(t, p, func(cfg *Config) { cfg.ConnString = srv.URL() })
	conn := connect(t, srv.URL())
	var setting string
	require.NoError(t, conn.QueryRow(ctx(t), `SHOW synchronous_commit`).Scan(&setting))
	require.Equal(t, "off", setting, "the server must run without synchronous commit for this test")
	fenced := func(conn *pgx.Conn) int64 {
		tx, err := conn.Begin(ctx(t))
		require.NoError(t, err)
		tok, err := AcquireFencedTx(ctx(t), tx, p, "crash", NoWait)
		require.NoError(t, err)
		require.Positive(t, tok)
		require.NoError(t, tx.Commit(ctx(t)))
		return tok
	}
	var last int64
	for range 100 {
		last = fenced(conn)
	}
	require.NoError(t, srv.StopImmediate())
	require.NoError(t, srv.StartServer())

	var after *pgx.Conn
	require.Eventually(t, func() bool {
		var err error
		after, err = pgx.Connect(ctx(t), srv.URL())
		return err == nil
	}, 20*time.Second, 10*time.Millisecond)
	defer after.Close(context.Background())
	var recorded int64
	require.NoError(t, after.QueryRow(ctx(t), `SELECT token FROM pgcoord.fences WHERE key = $1`, hash.Key(p+"crash")).Scan(&recorded))
	assert.Equal(t, last, recorded, "the fence recorded last before the crash")
	require.Greater(t, fenced(after), last, "the first token after the crash")
}
