package pgcoord

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// queue_leave (migration 103) notifies only the member whose turn it is
// when the first live ticket left is exclusive, everyone when it is shared,
// and skips a ticket whose backend is gone. Each ticket's backend is a
// connection of the test's, standing for a member's control session.
func TestQueueLeaveWakesOnlyTheNextMember(t *testing.T) {
	t.Parallel()
	key := rand.Int64()
	listener := connect(t, testURL)
	_, err := listener.Exec(ctx(t), `LISTEN pgcoord_queue`)
	require.NoError(t, err)
	// next is the payload of the next notification for key.
	next := func() string {
		t.Helper()
		for {
			wctx, cancel := context.WithTimeout(ctx(t), 10*time.Second)
			n, err := listener.WaitForNotification(wctx)
			cancel()
			require.NoError(t, err)
			if k, _, _ := strings.Cut(n.Payload, " "); k == fmt.Sprint(key) {
				return n.Payload
			}
		}
	}
	enter := func(conn *pgx.Conn, member string, shared bool) int64 {
		t.Helper()
		var ticket int64
		require.NoError(t, conn.QueryRow(ctx(t), `SELECT ticket FROM pgcoord.queue_enter($1, $2, $3, 0)`,
			key, shared, member).Scan(&ticket))
		return ticket
	}
	leave := func(conn *pgx.Conn, ticket int64) {
		t.Helper()
		_, err := conn.Exec(ctx(t), `SELECT pgcoord.queue_leave($1, $2)`, key, ticket)
		require.NoError(t, err)
	}
	a, b, c, d := connect(t, testURL), connect(t, testURL), connect(t, testURL), connect(t, testURL)

	ta := enter(a, "member-a", false)
	tb := enter(b, "member-b", false)
	tc := enter(c, "member-c", true)
	td := enter(d, "member-d", true)
	leave(a, ta)
	require.Equal(t, fmt.Sprintf("%d member-b", key), next(), "an exclusive ticket first: its member alone")
	leave(b, tb)
	require.Equal(t, fmt.Sprint(key), next(), "a shared ticket first: every waiter")

	// A ticket whose backend is gone is skipped: member-f, behind it, is
	// the one woken.
	e, f := connect(t, testURL), connect(t, testURL)
	te := enter(e, "member-e", false)
	tf := enter(f, "member-f", false)
	require.NoError(t, e.Close(ctx(t)))
	require.Eventually(t, func() bool {
		var alive bool
		require.NoError(t, c.QueryRow(ctx(t), `SELECT EXISTS (SELECT 1 FROM pgcoord.wait_queue q
			WHERE q.ticket = $1 AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(q.backend_pid)))`, te).Scan(&alive))
		return !alive
	}, 10*time.Second, 10*time.Millisecond)
	leave(c, tc)
	require.Equal(t, fmt.Sprint(key), next(), "member-d's shared ticket is first")
	leave(d, td)
	require.Equal(t, fmt.Sprintf("%d member-f", key), next(), "member-e's dead ticket is skipped")

	// The last ticket given back notifies nobody: the next notification
	// for key is the one after the ticket taken again.
	leave(f, tf)
	tb = enter(b, "member-b", false)
	enter(c, "member-c", false)
	leave(b, tb)
	require.Equal(t, fmt.Sprintf("%d member-c", key), next(), "nothing notified when no ticket is left")
}

// A notification that names a member wakes that member's subscribers only,
// and tells them it is their turn (awaitTurn then asks queue_head nothing).
func TestTargetedQueueNotification(t *testing.T) {
	t.Parallel()
	c := newCoord(t, testPrefix(t))
	key := rand.Int64()
	sub := c.notifier.subscribe(topicQueue, key)
	defer c.notifier.unsubscribe(sub)
	select { // the wake of its LISTEN being in place
	case <-sub.wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription was never woken")
	}
	notify := func(payload string) bool {
		c.notifier.notified(nil, &pgconn.Notification{Channel: topicQueue.channel(), Payload: payload})
		select {
		case <-sub.wake:
			return true
		default:
			return false
		}
	}
	require.False(t, notify(fmt.Sprintf("%d other-member", key)), "woken for another member")
	require.False(t, c.notifier.takeTurn(sub), "another member's turn taken for this one's")
	require.True(t, notify(fmt.Sprintf("%d %s", key, c.MemberID())), "not woken for its own member")
	require.True(t, c.notifier.takeTurn(sub), "a notification naming this member is its turn")
	require.False(t, c.notifier.takeTurn(sub), "a turn taken twice")
	require.True(t, notify(fmt.Sprint(key)), "not woken by a notification for every member")
	require.False(t, c.notifier.takeTurn(sub), "a notification for every member taken for a turn: it must look at the queue")
}
