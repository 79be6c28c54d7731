package pgcoord

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// electionStats returns c's stats of election name, failing the test when
// there are none.
func electionStats(t *testing.T, c *Coordinator, name string) ElectionStats {
	t.Helper()
	for _, e := range c.Stats().Elections {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no stats of election %q in %+v", name, c.Stats().Elections)
	return ElectionStats{}
}

// An election's stats follow its terms: a campaigner waiting is counted
// but not leader; a term won counts and leads; Resign ends it, a killed
// session ends it as lost, Stop ends it but not as lost.
func TestElectionStats(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	require.Empty(t, a.Stats().Elections, "no election campaigned in yet")
	a.Election("observed-only").IsLeader()
	require.Empty(t, a.Stats().Elections, "an Election never campaigned in is not counted")

	ea, eb := a.Election("e"), b.Election("e")
	require.NoError(t, ea.Campaign(ctx(t), "a"))
	require.Equal(t, ElectionStats{Name: "e", Leader: true, TermsWon: 1}, electionStats(t, a, "e"))

	waiting := make(chan error, 1)
	go func() { waiting <- eb.Campaign(ctx(t), "b") }()
	require.Eventually(t, func() bool { return len(b.Stats().Elections) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, ElectionStats{Name: "e"}, electionStats(t, b, "e"), "campaigning, not leading")

	require.NoError(t, ea.Resign(ctx(t)))
	require.Equal(t, ElectionStats{Name: "e", TermsWon: 1, TermsEnded: 1}, electionStats(t, a, "e"), "resigned")
	require.NoError(t, <-waiting)
	require.Equal(t, ElectionStats{Name: "e", Leader: true, TermsWon: 1}, electionStats(t, b, "e"))

	// b's term is lost: its session is terminated.
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, eb.lock.key))
	require.NoError(t, err)
	requireClosedWithin(t, eb.Done(), 5*time.Second, "Done")
	require.Equal(t, ElectionStats{Name: "e", TermsWon: 1, TermsEnded: 1, TermsLost: 1}, electionStats(t, b, "e"), "lost")

	// a leads again, then stops: the term ends, not lost.
	require.NoError(t, ea.Campaign(ctx(t), "a2"))
	require.Equal(t, ElectionStats{Name: "e", Leader: true, TermsWon: 2, TermsEnded: 1}, electionStats(t, a, "e"))
	require.NoError(t, a.Stop(ctx(t)))
	require.Equal(t, ElectionStats{Name: "e", TermsWon: 2, TermsEnded: 2}, electionStats(t, a, "e"), "ended by Stop")

	// RunAsLeader counts its term too.
	require.NoError(t, RunAsLeader(ctx(t), b, "run", "b", func(context.Context) error {
		require.Equal(t, ElectionStats{Name: "run", Leader: true, TermsWon: 1}, electionStats(t, b, "run"))
		return nil
	}))
	require.Equal(t, ElectionStats{Name: "run", TermsWon: 1, TermsEnded: 1}, electionStats(t, b, "run"))
}

// A semaphore's stats count the slots this coordinator holds, through all
// its Semaphores of the name, until Release or loss.
func TestSemaphoreStats(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c := newCoord(t, p)
	s1, s2, s3 := c.Semaphore("pool", 3), c.Semaphore("pool", 3), c.Semaphore("pool", 3)
	mustTake(t, s1, NoWait)
	mustTake(t, s2, NoWait)
	require.Equal(t, []SemaphoreStats{{Name: "pool", Held: 2}}, c.Stats().Semaphores)
	require.NoError(t, s1.Release(ctx(t)))
	require.ErrorIs(t, s1.Release(ctx(t)), ErrNotHeld)
	require.Equal(t, []SemaphoreStats{{Name: "pool", Held: 1}}, c.Stats().Semaphores)
	mustTake(t, s3, NoWait)
	require.Equal(t, []SemaphoreStats{{Name: "pool", Held: 2}}, c.Stats().Semaphores)

	// s2's slot is lost: it no longer counts, and its Release (ErrLockLost)
	// does not uncount it twice.
	lost := s2.Lost()
	s2.mu.Lock()
	key := s2.held.key
	s2.mu.Unlock()
	_, err := testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, heldBy(t, key))
	require.NoError(t, err)
	requireClosedWithin(t, lost, 5*time.Second, "semaphore Lost")
	// The session held both slots: both are lost.
	require.Eventually(t, func() bool { return c.Stats().Semaphores[0].Held == 0 }, 5*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, s2.Release(ctx(t)), ErrLockLost)
	require.ErrorIs(t, s3.Release(ctx(t)), ErrLockLost)
	require.Equal(t, []SemaphoreStats{{Name: "pool", Held: 0}}, c.Stats().Semaphores)

	mustTake(t, s1, NoWait)
	require.Equal(t, []SemaphoreStats{{Name: "pool", Held: 1}}, c.Stats().Semaphores)
	require.NoError(t, c.Stop(ctx(t)))
	require.Equal(t, []SemaphoreStats{{Name: "pool", Held: 0}}, c.Stats().Semaphores, "Stop")
}

// A group's stats: joined, watched, and the members seen at the last read.
func TestGroupStats(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	_, err := a.GroupMembers(ctx(t), "other")
	require.NoError(t, err)
	require.Empty(t, a.Stats().Groups, "a group only read is not counted")

	require.NoError(t, a.JoinGroup(ctx(t), "g", nil))
	gs := a.Stats().Groups
	require.Len(t, gs, 1)
	require.Equal(t, GroupStats{Name: "g", Joined: true}, gs[0], "not read yet")

	wctx, stopWatch := context.WithCancel(ctx(t))
	events, err := a.WatchGroup(wctx, "g")
	require.NoError(t, err)
	gs = a.Stats().Groups
	require.Equal(t, 1, gs[0].Members, "the watch read the group")
	require.Equal(t, 1, gs[0].Watches)
	require.WithinDuration(t, time.Now(), gs[0].ReadAt, 5*time.Second)

	require.NoError(t, b.JoinGroup(ctx(t), "g", nil))
	ev := <-events
	require.Equal(t, Joined, ev.Kind)
	require.Equal(t, 2, a.Stats().Groups[0].Members, "the watch read the group after the join")

	stopWatch()
	for range events {
	}
	require.Eventually(t, func() bool { return a.Stats().Groups[0].Watches == 0 }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, b.LeaveGroup(ctx(t), "g"))
	require.Equal(t, 2, a.Stats().Groups[0].Members, "not read since")
	ms, err := a.GroupMembers(ctx(t), "g")
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, 1, a.Stats().Groups[0].Members, "GroupMembers read it")

	require.NoError(t, a.LeaveGroup(ctx(t), "g"))
	require.Empty(t, a.Stats().Groups, "neither joined nor watched")
	require.ErrorIs(t, a.LeaveGroup(ctx(t), "g"), ErrNotJoined)

	require.NoError(t, a.JoinGroup(ctx(t), "g", nil))
	require.Len(t, a.Stats().Groups, 1)
	require.NoError(t, a.Stop(ctx(t)))
	require.Empty(t, a.Stats().Groups, "no group is joined after Stop")
}

// A Semaphore's Acquire counts once in Stats, as a Lock's does: Acquired
// when it takes a slot, Busy when it gives up, and, when it waited, one
// wait in Waited and WaitTime. Before, every slot it tried was an
// acquisition of its own: a NoWait Acquire of a full semaphore of 3 slots
// counted 3 busy, a Timeout(1s) one 23 busy and 5 waits of 200 ms.
func TestSemaphoreAcquireCountsOnce(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	a, b := newCoord(t, p), newCoord(t, p)
	var held []*Semaphore
	for range 3 {
		s := a.Semaphore("pool", 3)
		mustTake(t, s, NoWait)
		held = append(held, s)
	}
	s := b.Semaphore("pool", 3)
	counts := func() Stats {
		st := b.Stats()
		return Stats{Acquired: st.Acquired, Busy: st.Busy, Waited: st.Waited}
	}

	ok, err := s.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, Stats{Busy: 1}, counts(), "a NoWait Acquire that found every slot busy")

	ok, err = s.Acquire(ctx(t), Timeout(time.Second))
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, Stats{Busy: 2, Waited: 1}, counts(), "a Timeout(1s) Acquire that gave up")
	require.GreaterOrEqual(t, b.Stats().WaitTime, time.Second, "its wait, whole")

	got := make(chan error, 1)
	go func() {
		ok, err := s.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = ErrNotHeld
		}
		got <- err
	}()
	time.Sleep(500 * time.Millisecond) // a few rounds of slot tries
	require.NoError(t, held[0].Release(ctx(t)))
	require.NoError(t, <-got)
	require.Equal(t, Stats{Acquired: 1, Busy: 2, Waited: 2}, counts(), "a waiting Acquire that took a slot")
	require.NoError(t, s.Release(ctx(t)))
}
