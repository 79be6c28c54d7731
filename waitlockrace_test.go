package pgcoord

import (
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// pgcoord.wait_lock and wait_lock_shared, called from SQL, return the lock
// a wait was granted as its lock_timeout fired (see migration 0106): a
// token, and the session holds the key; 0 and nothing held otherwise.
// Before, they returned 0 while the session kept the grant, for nobody.
// The race is made certain as in TestTimedOutSliceKeepsNoGrant: the
// waiting backend is frozen, granted the key, left past its timeout and
// woken.
func TestWaitLockFunctionsKeepRacedGrant(t *testing.T) {
	t.Parallel()
	for _, fn := range []string{"wait_lock", "wait_lock_shared"} {
		t.Run(fn, func(t *testing.T) {
			t.Parallel()
			srv := ownServer(t, nil)
			admin := connect(t, srv.URL())
			holder := connect(t, srv.URL())
			waiter := connect(t, srv.URL())
			const key = int64(0x5eed_0000_0042)
			var ok bool
			require.NoError(t, holder.QueryRow(ctx(t), `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok))
			require.True(t, ok)

			got := make(chan int64, 1)
			go func() {
				var tok int64
				// A timeout of 3 s: the freeze below must come before it,
				// on a machine loaded by the suite under -race.
				err := waiter.QueryRow(ctx(t), `SELECT pgcoord.`+fn+`($1, 3000)`, key).Scan(&tok)
				require.NoError(t, err)
				got <- tok
			}()
			pid := waiter.PgConn().PID()
			granted := func() (bool, bool) { // (in pg_locks, granted)
				var g bool
				err := admin.QueryRow(ctx(t), `SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND objsubid = 1`, pid).Scan(&g)
				if err == pgx.ErrNoRows {
					return false, false
				}
				require.NoError(t, err)
				return true, g
			}
			require.Eventually(t, func() bool { in, g := granted(); return in && !g }, 10*time.Second, time.Millisecond, "the wait is on the server")
			require.NoError(t, syscall.Kill(int(pid), syscall.SIGSTOP))
			require.NoError(t, holder.QueryRow(ctx(t), `SELECT pg_advisory_unlock($1)`, key).Scan(&ok))
			require.True(t, ok)
			in, g := granted()
			require.True(t, in && g, "granted to the frozen waiter")
			time.Sleep(3300 * time.Millisecond) // its lock_timeout fires meanwhile
			require.NoError(t, syscall.Kill(int(pid), syscall.SIGCONT))

			tok := <-got
			in, g = granted()
			require.True(t, in && g, "the session holds the key")
			require.NotZero(t, tok, "%s returned 0 (timed out) while its session held the key", fn)
			unlock := `SELECT pg_advisory_unlock($1)`
			if fn == "wait_lock_shared" {
				unlock = `SELECT pg_advisory_unlock_shared($1)`
			}
			require.NoError(t, waiter.QueryRow(ctx(t), unlock, key).Scan(&ok))
			require.True(t, ok)
			require.NoError(t, holder.QueryRow(ctx(t), `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok))
			require.True(t, ok, "one unlock frees the key")

			// A plain timeout still returns 0 and holds nothing.
			require.NoError(t, waiter.QueryRow(ctx(t), `SELECT pgcoord.`+fn+`($1, 50)`, key).Scan(&tok))
			require.Zero(t, tok)
			in, _ = granted()
			require.False(t, in, "a plain timeout holds nothing")
		})
	}
}
