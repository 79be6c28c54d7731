package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestResignSparesConcurrentCampaign: a Resign releases only its own
// term's hold. Before, it released whatever hold the election's Lock had
// when its EndTerm returned: a Campaign that had won the lock meanwhile
// (the old term's session died while Resign recorded the resignation) lost
// its hold to a normal release, which its Campaign did not take for a loss,
// and led with nothing held on the server while another member could win
// the lock too.
//
// A trigger makes the resignation's write take 2 s, so the Campaign runs
// within it.
func TestResignSparesConcurrentCampaign(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	p := testPrefix(t)
	mk := func() *Coordinator {
		return newCoord(t, p, func(cfg *Config) {
			cfg.ConnString = srv.URL()
			// A lease (SessionTimeout less two heartbeats) longer than the
			// 2 s the control session spends in the resignation's write,
			// during which the member's heartbeat cannot run: a leader's
			// hold is not trusted past its member's heartbeat lease.
			cfg.HeartbeatInterval = 250 * time.Millisecond
			cfg.SessionTimeout = 10 * time.Second
		})
	}
	c1, c2 := mk(), mk()
	e1 := c1.Election("e")
	require.NoError(t, e1.Campaign(ctx(t), "one"))
	pid := e1.BackendPID()

	admin := connect(t, srv.URL())
	_, err := admin.Exec(ctx(t), `
		CREATE FUNCTION public.slow_resign() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$;
		CREATE TRIGGER slow_resign BEFORE UPDATE ON pgcoord.elections FOR EACH ROW
		WHEN (NEW.resigned_at IS NOT NULL AND OLD.resigned_at IS NULL)
		EXECUTE FUNCTION public.slow_resign()`)
	require.NoError(t, err)

	resigned := make(chan error, 1)
	go func() { resigned <- e1.Resign(ctx(t)) }()
	awaitSleep(t, admin, "the resignation's write never started")
	// The old term's session dies while the resignation is written.
	_, err = admin.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	requireClosedWithin(t, e1.lock.Lost(), 5*time.Second, "the old term's hold lost")

	campaigned := make(chan error, 1)
	go func() { campaigned <- e1.Campaign(ctx(t), "two") }()
	require.NoError(t, <-resigned)
	require.NoError(t, <-campaigned)

	// e1 leads, so the server holds its lock, and no one else can lead.
	require.True(t, e1.IsLeader())
	var holders int
	require.NoError(t, admin.QueryRow(ctx(t),
		`SELECT count(*) FROM pgcoord.held_locks WHERE key = $1 AND granted`, e1.lock.key).Scan(&holders))
	require.Equal(t, 1, holders, "e1 leads with its lock held by nobody")
	short, cancel := context.WithTimeout(ctx(t), 500*time.Millisecond)
	defer cancel()
	e2 := c2.Election("e")
	require.ErrorIs(t, e2.Campaign(short, "three"), context.DeadlineExceeded, "a second member leads too")
	require.NoError(t, e1.Resign(ctx(t)))
}
