package pgcoord

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
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
