package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A LeaveGroup whose delete committed and whose reply was lost with the
// control connection is not undone by the reconnect, which puts back only
// the memberships the member still means to hold. Before, the group was
// still among them until LeaveGroup returned: the reconnect's RejoinGroups
// wrote the row back and notified the group's watchers, and LeaveGroup's
// run again deleted it once more (a watcher reading in between saw Left,
// Joined, Left); a LeaveGroup whose ctx ended before that second run left
// the member in the group for good.
func TestLostLeaveNotRejoined(t *testing.T) {
	t.Parallel()
	srv := ownServer(t, nil)
	admin := connect(t, srv.URL())
	pool := stallingPool(t, srv.URL())
	p := testPrefix(t)
	c := newCoord(t, p, func(cfg *Config) { cfg.ConnString, cfg.Pool = "", pool })
	w := newCoord(t, p, func(cfg *Config) { cfg.ConnString = srv.URL() })
	slowWrite(t, admin, "pgcoord.group_members", "DELETE", "true")
	// Every write of a membership, in order.
	_, err := admin.Exec(ctx(t), `
		CREATE TABLE public.writes (id serial, op text, group_name text);
		CREATE FUNCTION public.note_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.writes (op, group_name)
			VALUES (TG_OP, CASE TG_OP WHEN 'DELETE' THEN OLD.group_name ELSE NEW.group_name END);
			RETURN NULL;
		END $$;
		CREATE TRIGGER note_write AFTER INSERT OR DELETE ON pgcoord.group_members
		FOR EACH ROW EXECUTE FUNCTION public.note_write()`)
	require.NoError(t, err)
	writes := func(group string) []string {
		var ops []string
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT coalesce(array_agg(op ORDER BY id), '{}') FROM public.writes WHERE group_name = $1`,
			p+group).Scan(&ops))
		return ops
	}
	gone := func() bool {
		var n int
		require.NoError(t, admin.QueryRow(ctx(t), `SELECT count(*) FROM pgcoord.group_members WHERE member_id = $1`, c.MemberID()).Scan(&n))
		return n == 0
	}

	t.Run("RunAgain", func(t *testing.T) {
		require.NoError(t, c.JoinGroup(ctx(t), "g", "c"))
		evs, err := w.WatchGroup(ctx(t), "g")
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- c.LeaveGroup(ctx(t), "g") }()
		loseReply(t, admin, c, gone)
		require.NoError(t, <-done)
		require.Equal(t, []string{"INSERT", "DELETE"}, writes("g"), "the membership was written back after the leave")
		ev := nextEvent(t, evs, 10*time.Second)
		require.Equal(t, Left, ev.Kind)
		require.Equal(t, c.MemberID(), ev.Member.ID)
		select {
		case ev := <-evs:
			t.Fatalf("an event after the Left: %v %s", ev.Kind, ev.Member.ID)
		case <-time.After(3 * w.cfg.HeartbeatInterval):
		}
	})

	t.Run("Abandoned", func(t *testing.T) {
		require.NoError(t, c.JoinGroup(ctx(t), "h", "c"))
		before := c.Stats().Reconnects
		lctx, cancel := context.WithCancel(ctx(t))
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.LeaveGroup(lctx, "h") }()
		// The caller gives up once the delete committed, before the
		// connection breaks: LeaveGroup does not run it again.
		loseReply(t, admin, c, func() bool {
			if !gone() {
				return false
			}
			cancel()
			return true
		})
		require.ErrorIs(t, <-done, context.Canceled)
		require.Eventually(t, func() bool { return c.Stats().Reconnects > before }, 10*time.Second, 10*time.Millisecond, "no reconnect")
		ms, err := w.GroupMembers(ctx(t), "h")
		require.NoError(t, err)
		require.Empty(t, ms, "the reconnect put back a membership whose leave committed")
	})
}
