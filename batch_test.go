package pgcoord

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Many goroutines on one lock session share batches. Each hold and release
// still has its own outcome: exclusion holds, tokens are distinct, and
// nothing is left held on the server.
func TestBatchedOpsKeepTheirOwnOutcome(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	other := newCoord(t, p)

	// Half the names are held elsewhere, so batches mix granted and busy
	// tries with unlocks.
	for i := range 16 {
		if i%2 == 1 {
			mustAcquire(t, other.GetLock(fmt.Sprint("b-", i)), NoWait)
		}
	}
	var (
		mu     sync.Mutex
		tokens = map[int64]bool{}
		wg     sync.WaitGroup
	)
	for g := range 32 {
		wg.Go(func() {
			l := c.GetLock(fmt.Sprint("b-", g%16))
			for range 50 {
				ok, err := l.Acquire(ctx(t), NoWait)
				if err != nil {
					t.Error(err)
					return
				}
				if g%16%2 == 1 {
					if ok {
						t.Errorf("%q granted while held by another coordinator", l.Name())
					}
					continue
				}
				if !ok {
					continue // the other goroutine on this name holds it
				}
				mu.Lock()
				if tokens[l.Token()] {
					t.Errorf("token %d given twice", l.Token())
				}
				tokens[l.Token()] = true
				mu.Unlock()
				if err := l.Release(ctx(t)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NotEmpty(t, tokens)
	require.Zero(t, c.Stats().Held)
	require.Zero(t, serverLocksOf(t, testURL, c.MemberID()))
}

// When one statement of a batch fails (the server's lock table full), the
// others are not lost or repeated: each op gets its own outcome, and after
// releasing every hold the server holds nothing for the coordinator. (A try
// repeated after it had succeeded would take its lock twice, and one
// release would then leave it held.)
func TestBatchStatementFailure(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, map[string]string{"max_locks_per_transaction": "10", "max_connections": "20"})
	c := newCoord(t, testPrefix(t), func(cfg *Config) {
		cfg.ConnString = srv.URL()
		cfg.MaxHeldLocks = 100000
	})

	var (
		mu    sync.Mutex
		held  []*Lock
		fulls int
		wg    sync.WaitGroup
	)
	// Each goroutine takes names until the server has refused it
	// fullsEach of them, whatever the lock table's size: with these
	// settings it holds 787 advisory locks on PostgreSQL 17.10 and 1427
	// on 18.4 (one session, measured), whose table is sized for more
	// backends (autovacuum_worker_slots, 16 by default), so a fixed 16 × 60
	// names filled it up to 17 and never on 18 (make test-matrix: "the
	// lock table never filled"). 16 × fullsEach refusals on every version,
	// as 16 × 60 names gave on 17 (about 11 each).
	const fullsEach = 10
	for g := range 16 {
		wg.Go(func() {
			var mine []*Lock
			for i, refused := 0, 0; refused < fullsEach && i < 1000; i++ {
				l := c.GetLock(fmt.Sprintf("fill-%d-%d", g, i))
				ok, err := l.Acquire(ctx(t), NoWait)
				switch {
				case err == nil && ok:
					mine = append(mine, l)
				case errors.Is(err, ErrLockTableFull) && len(mine) > 0:
					refused++
					mu.Lock()
					fulls++
					mu.Unlock()
					// Release one, so unlocks share batches with failing tries.
					if err := mine[0].Release(ctx(t)); err != nil {
						t.Error(err)
						return
					}
					mine = mine[1:]
				default:
					t.Errorf("acquire %q: %v, %v", l.Name(), ok, err)
					return
				}
			}
			mu.Lock()
			held = append(held, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Positive(t, fulls, "the lock table never filled")
	t.Logf("%d holds, %d acquires refused with ErrLockTableFull", len(held), fulls)
	// Make room in the lock table for the query that counts locks.
	require.Greater(t, len(held), 50)
	for _, l := range held[:50] {
		require.NoError(t, l.Release(ctx(t)))
	}
	held = held[50:]
	require.Equal(t, len(held), serverLocksOf(t, srv.URL(), c.MemberID()))
	for _, l := range held {
		select {
		case <-l.Lost():
			t.Fatalf("%q lost", l.Name())
		default:
		}
		require.NoError(t, l.Release(ctx(t)))
	}
	require.Zero(t, serverLocksOf(t, srv.URL(), c.MemberID()))
}

// serverLocksOf counts the advisory locks the server grants to member's
// sessions, by the member's recorded backend pids.
func serverLocksOf(t testing.TB, url, member string) int {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), url)
	require.NoError(t, err)
	defer conn.Close(ctx(t))
	var n int
	require.NoError(t, conn.QueryRow(ctx(t), `
		SELECT count(*) FROM pgcoord.held_locks WHERE member_id = $1 AND granted`, member).Scan(&n))
	return n
}
