package pgcoord

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTicketOfReusedPIDIsDead: a ticket is live only while a backend of
// its pid with its application_name runs (migration 0107). A member that
// died while waiting left its ticket; when the server gives the dead
// backend's pid to an unrelated session, the ticket is still dead. Before,
// the pid alone made it live again, and a queued wait of another member
// for its key, free after 300 ms, never had its turn. The unrelated
// session is a superuser's and the waiter runs as a least-privilege role:
// pg_stat_get_activity shows application_name to every role.
func TestTicketOfReusedPIDIsDead(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	holder := newCoord(t, p)
	role := appRole(t, "")
	b := newCoord(t, p, func(cfg *Config) {
		cfg.ConnString = withUser(t, testURL, role, "app-pw")
		cfg.SkipMigrations = true
	})
	unrelated := connect(t, testURL)
	k := holder.GetLock("k")
	mustAcquire(t, k, NoWait)
	var ghost int64
	require.NoError(t, testPool.QueryRow(ctx(t),
		`INSERT INTO pgcoord.wait_queue (key, shared, member_id, since, backend_pid, app_name)
		 VALUES ($1, false, $2, now() - interval '1 minute', $3, $4) RETURNING ticket`,
		k.Key(), p+"ghost", unrelated.PgConn().PID(), sessionTagFor(p+"ghost")).Scan(&ghost))

	requireQueuedWaitGranted(t, k, b.GetLock("k"))
	// The ticket was taken for dead: b's own enqueue deleted it.
	require.Zero(t, ticketPID(t, ghost))
}
