package pgcoord

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// The notifier's listener goroutine: it owns the notifier's use of the
// control connection (LISTEN, UNLISTEN, the wait markers, the wait for a
// notification) and reconnects with it.

// loop is the listener: it runs from Start to Stop, and uses the control
// session only while there are subscribers (or LISTEN and markers to undo).
func (n *notifier) loop() {
	defer close(n.done)
	ctx := n.c.runCtx
	for {
		if n.idle() {
			select {
			case <-ctx.Done():
				return
			case <-n.kick:
				continue
			}
		}
		err := n.c.control.do(ctx, n.serve)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The control session is down (reconnecting): subscribers look
			// for themselves every farCheck until it is back.
			n.missed()
			select {
			case <-ctx.Done():
				return
			case <-time.After(farCheck):
			}
		}
	}
}

// forget drops what the listener knew of its connection.
func (n *notifier) forget() {
	n.conn = nil
	n.listening = [numTopics]bool{}
	n.armed = map[int64]bool{}
}

// idle reports whether the listener has nothing to do: no subscribers, and
// no LISTEN or marker left to undo.
func (n *notifier) idle() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.subs) == 0 && len(n.fresh) == 0 && n.conn == nil
}

// serve runs one round on the control session (its sem held): it brings
// LISTEN and the markers in line with the subscriptions, wakes the fresh
// ones, runs the dead-holder check when due, and then waits for a
// notification until the next check, a change in the subscriptions, or
// someone else wanting the session.
func (n *notifier) serve(ctx context.Context, conn *pgx.Conn) error {
	err := n.round(ctx, conn)
	if err != nil && conn.IsClosed() {
		// Its LISTEN and markers went with it. (Looked at here, with the
		// session's sem held: the heartbeat and others use the connection
		// too, and pgx's IsClosed is not safe beside them.)
		n.forget()
	}
	return err
}

// round is serve's body.
func (n *notifier) round(ctx context.Context, conn *pgx.Conn) error {
	if conn != n.conn {
		// A new connection: its LISTEN and markers are gone, and anything
		// may have happened meanwhile.
		n.forget()
		n.conn = conn
		n.nextCheck = 0
		defer n.missed()
	}
	topics, keys, fresh := n.wanted()
	// LISTEN before the markers: an unlock that finds a marker notifies a
	// listener.
	for t := range numTopics {
		if topics[t] && !n.listening[t] {
			if err := n.listen(ctx, conn, t, true); err != nil {
				return err
			}
		}
	}
	if err := n.arm(ctx, conn, keys); err != nil {
		return err
	}
	for t := range numTopics {
		if !topics[t] && n.listening[t] {
			// Nobody subscribes any more: stop listening, so that this
			// session is not sent other coordinators' notifications.
			if err := n.listen(ctx, conn, t, false); err != nil {
				return err
			}
		}
	}
	for _, s := range fresh {
		// In place now: a change since the subscriber's own first look
		// sent it nothing, so it looks once more.
		signal(s.wake)
	}
	if now := monoNow(); now >= n.nextCheck {
		n.nextCheck = now + int64(farCheck)
		n.wakeQuiet()
	}
	if n.listening == [numTopics]bool{} && len(n.armed) == 0 {
		n.conn = nil
		return nil
	}
	return n.wait(conn, time.Duration(n.nextCheck-monoNow()))
}

// listen runs LISTEN (on) or UNLISTEN for t's channel.
func (n *notifier) listen(ctx context.Context, conn *pgx.Conn, t topic, on bool) error {
	q := n.c.q
	var err error
	switch {
	case t == topicFree && on:
		err = q.Listen(ctx, conn)
	case t == topicFree:
		err = q.Unlisten(ctx, conn)
	case t == topicLeader && on:
		err = q.ListenLeader(ctx, conn)
	case t == topicLeader:
		err = q.UnlistenLeader(ctx, conn)
	case t == topicQueue && on:
		err = q.ListenQueue(ctx, conn)
	case t == topicQueue:
		err = q.UnlistenQueue(ctx, conn)
	case on:
		err = q.ListenGroup(ctx, conn)
	default:
		err = q.UnlistenGroup(ctx, conn)
	}
	if err == nil {
		n.listening[t] = on
	}
	return err
}

// arm takes the wait markers of the keys waited for and drops the others.
func (n *notifier) arm(ctx context.Context, conn *pgx.Conn, want map[int64]bool) error {
	var arm, disarm []int64
	for k := range want {
		if !n.armed[k] {
			arm = append(arm, k)
		}
	}
	for k := range n.armed {
		if !want[k] {
			disarm = append(disarm, k)
		}
	}
	if len(disarm) > 0 {
		if err := n.c.q.UnlockWaitMarkers(ctx, conn, disarm); err != nil {
			return err
		}
		for _, k := range disarm {
			delete(n.armed, k)
		}
	}
	if len(arm) > 0 {
		if err := n.c.q.LockWaitMarkers(ctx, conn, arm); err != nil {
			if !conn.IsClosed() {
				// The statement takes the markers one by one, and levels it
				// took before failing (the control session's lock_timeout,
				// a full lock table) outlive it, as does one granted as the
				// timeout fired; none was recorded as armed, so the next
				// round would take them again on top, and one level would
				// stay for nobody after the last waiter left (every release
				// of the key then notifying the fleet). No key of arm had a
				// level before: giving them all back frees exactly those
				// (TestFailedArmLeavesNoMarker).
				if uerr := n.c.q.UnlockWaitMarkers(ctx, conn, arm); uerr != nil {
					return errors.Join(err, uerr)
				}
			}
			return err
		}
		for _, k := range arm {
			n.armed[k] = true
		}
		// A newly marked key's waits try at once: its lock may have been
		// released before the marker was there, with no NOTIFY.
		n.mu.Lock()
		for _, k := range arm {
			for _, s := range n.subs[subKey{topicFree, k}] {
				signal(s.wake)
			}
		}
		n.mu.Unlock()
	}
	return nil
}

// wait waits for a notification for at most d, ending early when the
// subscriptions change or someone else wants the control session (see
// session.interrupt). Notifications are handled by notified.
func (n *notifier) wait(conn *pgx.Conn, d time.Duration) error {
	s := n.c.control
	raw := conn.PgConn().Conn()
	s.listenMu.Lock()
	s.listening = true
	_ = raw.SetReadDeadline(time.Now().Add(d))
	s.listenMu.Unlock()
	defer func() {
		s.listenMu.Lock()
		s.listening = false
		_ = raw.SetReadDeadline(time.Time{})
		s.listenMu.Unlock()
	}()
	// Checked after listening is set: a change or a want that came before
	// is seen here, one that comes after moves the deadline.
	if n.changed.Load() || s.wanted.Load() > 0 || d <= 0 {
		return nil
	}
	// Without a context pgx watches nothing: the read deadline bounds the
	// wait, and a timeout leaves the connection usable.
	err := conn.PgConn().WaitForNotification(context.Background())
	var netErr net.Error
	if err != nil && errors.As(err, &netErr) && netErr.Timeout() && !conn.IsClosed() {
		return nil
	}
	return err
}
