package pgcoord

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The notifier (after River's internal/notifier): one listener per
// coordinator, on the control connection it already has, serving every
// part of the library that waits for a NOTIFY. A subscriber subscribes to a
// topic and a key and gets a wake channel; the notifier LISTENs on a
// topic's channel only while it has subscribers, and wakes every subscriber
// of the key a notification names. It has four kinds of subscribers:
//
//   - waits beyond the session budget (topicFree, far.go): for each key
//     they wait for, the listener also holds a shared lock on the key's
//     wait marker, so that an unlock sends NOTIFY pgcoord_free only when
//     someone waits (see the Unlock query);
//   - election observers (topicLeader, Election.Observe);
//   - group watchers (topicGroup, WatchGroup);
//   - waits queued behind earlier tickets for their key (topicQueue,
//     queue.go).
//
// Notifications are a hint, never the truth: each subscriber reads (or
// tries) the state itself when woken. So a notification may be lost at no
// cost but latency, and the notifier says so: when its connection is new
// (LISTEN and markers of the old one are gone, and anything may have
// happened meanwhile), and every farCheck while the control session is
// down, it wakes every subscriber ("you may have missed something"), and
// each one reconciles. A subscription is also woken once as soon as its
// LISTEN (and marker) is in place, since a change between the subscriber's
// first look and that moment sends it nothing.
//
// Subscribers of a key are kept in arrival order: today every one is woken
// by a notification; a targeted wake-up (only the head of a key's queue)
// can be built on the same lists.
type notifier struct {
	c *Coordinator

	mu sync.Mutex
	// subs lists the subscriptions of each topic and key, in arrival order.
	subs map[subKey][]*subscription
	// fresh are the subscriptions made since the listener last brought
	// LISTEN and markers in line: it wakes them once that is done.
	fresh []*subscription
	// changed is set when subs changed since the listener last looked.
	changed atomic.Bool
	// kick wakes an idle listener (capacity 1).
	kick chan struct{}
	// queueUntil (monoNow) keeps LISTEN pgcoord_queue on for queueLinger
	// after its last subscriber left; guarded by mu.
	queueUntil int64

	// The fields below belong to the listener goroutine.
	// conn is the control connection on which listening and armed hold; a
	// new connection has neither.
	conn      *pgx.Conn
	listening [numTopics]bool
	armed     map[int64]bool
	// nextCheck is when the next dead-holder check is due (monoNow).
	nextCheck int64

	done chan struct{}
}

// queueLinger is how long LISTEN pgcoord_queue stays on after the last
// queued wait of this coordinator ended: under contention one wait follows
// another, and a LISTEN and an UNLISTEN for each would cost two round trips
// on the control session per wait. Meanwhile the session is sent the
// queue notifications of other coordinators, which are few: a ticket
// given back notifies only when others wait for its key.
const queueLinger = 10 * time.Second

// topic is a notification channel the library sends on; the payload is
// always a key.
type topic uint8

const (
	// topicFree: a lock's key was released while its wait marker was held.
	topicFree topic = iota
	// topicLeader: an election's term began, changed value or ended; the key
	// is the election's lock key.
	topicLeader
	// topicGroup: a group's membership changed; the key is the group's.
	topicGroup
	// topicQueue: a ticket of a key's wait queue was given back while
	// others waited (see queue.go).
	topicQueue
	numTopics
)

// channel is the NOTIFY channel of t.
func (t topic) channel() string {
	switch t {
	case topicFree:
		return "pgcoord_free"
	case topicLeader:
		return "pgcoord_leader"
	case topicQueue:
		return "pgcoord_queue"
	default:
		return "pgcoord_group"
	}
}

// topicOf returns the topic whose channel is ch.
func topicOf(ch string) (topic, bool) {
	for t := range numTopics {
		if t.channel() == ch {
			return t, true
		}
	}
	return 0, false
}

type subKey struct {
	topic topic
	key   int64
}

// subscription is one subscriber of a topic's key.
type subscription struct {
	subKey
	// wake (capacity 1) tells the subscriber to look.
	wake chan struct{}
	// heard is when a notification for it last came (monoNow); guarded by
	// notifier.mu. A free key whose releases are heard needs no dead-holder
	// check: its holders are alive and letting go.
	heard int64
	// turn is set, under notifier.mu, by a notification that named this
	// member: queue_leave found its ticket first among the live ones, so
	// the wait need not ask queue_head (see takeTurn).
	turn bool
}

// takeTurn reports whether a notification naming this member woke s since
// the last call (see subscription.turn), and clears it.
func (n *notifier) takeTurn(s *subscription) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	turn := s.turn
	s.turn = false
	return turn
}

func (n *notifier) init(c *Coordinator) {
	n.c = c
	n.subs = map[subKey][]*subscription{}
	n.armed = map[int64]bool{}
	n.kick = make(chan struct{}, 1)
}

// subscribe registers a subscriber of t's key; it is woken by every
// notification of the key, and whenever notifications may have been missed.
func (n *notifier) subscribe(t topic, key int64) *subscription {
	s := &subscription{subKey: subKey{t, key}, wake: make(chan struct{}, 1)}
	n.mu.Lock()
	n.subs[s.subKey] = append(n.subs[s.subKey], s)
	n.fresh = append(n.fresh, s)
	n.mu.Unlock()
	n.poke()
	return s
}

// unsubscribe ends s; the listener drops LISTEN and the marker when s was
// the last of its kind.
func (n *notifier) unsubscribe(s *subscription) {
	n.mu.Lock()
	list := n.subs[s.subKey]
	for i, x := range list {
		if x == s {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if s.topic == topicQueue {
		n.queueUntil = monoNow() + int64(queueLinger)
	}
	if len(list) == 0 {
		delete(n.subs, s.subKey)
	} else {
		n.subs[s.subKey] = list
	}
	n.mu.Unlock()
	n.poke()
}

// poke tells the listener that the subscriptions changed.
func (n *notifier) poke() {
	n.changed.Store(true)
	select {
	case n.kick <- struct{}{}:
	default:
	}
	n.c.control.interrupt()
}

// notified is the control connection's OnNotification: it wakes the
// subscribers of the key. It runs inside pgx's read of the connection, so it
// only signals.
func (n *notifier) notified(_ *pgconn.PgConn, msg *pgconn.Notification) {
	t, ok := topicOf(msg.Channel)
	if !ok {
		return
	}
	// A payload may name the one member it is for after the key
	// ("key member_id": queue_leave, migration 103, wakes only the member
	// whose turn it is); the other members' listeners ignore it.
	keyText, member, targeted := strings.Cut(msg.Payload, " ")
	if targeted && member != n.c.memberID {
		return
	}
	key, err := strconv.ParseInt(keyText, 10, 64)
	if err != nil {
		return
	}
	now := monoNow()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.subs[subKey{t, key}] {
		s.heard = now
		s.turn = s.turn || targeted
		signal(s.wake)
	}
}

// signal sends on a wake channel without blocking (nil: nothing).
func signal(wake chan struct{}) {
	if wake == nil {
		return
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}

// missed wakes every subscriber: notifications may have been missed (a new
// connection, or none while the control session is down).
func (n *notifier) missed() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, list := range n.subs {
		for _, s := range list {
			signal(s.wake)
		}
	}
}

// wakeQuiet is the dead-holder check: it wakes the waits beyond the budget
// whose key has had no release notified for a check period. A holder that
// dies sends no NOTIFY; under contention most keys change hands more often
// than that, and their waits are left alone.
func (n *notifier) wakeQuiet() {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := monoNow()
	for k, list := range n.subs {
		if k.topic != topicFree {
			continue
		}
		for _, s := range list {
			if time.Duration(now-s.heard) >= farCheck {
				signal(s.wake)
			}
		}
	}
}

// wanted returns the topics with subscribers and the free keys waited for,
// and takes the fresh subscriptions.
func (n *notifier) wanted() (topics [numTopics]bool, keys map[int64]bool, fresh []*subscription) {
	n.changed.Store(false)
	n.mu.Lock()
	defer n.mu.Unlock()
	keys = map[int64]bool{}
	topics[topicQueue] = monoNow() < n.queueUntil
	for k := range n.subs {
		topics[k.topic] = true
		if k.topic == topicFree {
			keys[k.key] = true
		}
	}
	fresh, n.fresh = n.fresh, nil
	return topics, keys, fresh
}
