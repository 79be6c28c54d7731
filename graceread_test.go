package pgcoord

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGraceForTermRecordedAfterRead: a successor decides on the grace
// from the previous term it reads, and its predecessor's term may be
// recorded after that read: the predecessor won the lock, its session died
// before its term committed, and the successor, granted the lock then, read
// the term before it (resigned: no grace). Before the fix the successor led
// at once, beside a predecessor that had recorded its term and led unaware.
// Now the successor's term records which term it replaced, and one it did
// not read is waited for as any unresigned predecessor is.
func TestGraceForTermRecordedAfterRead(t *testing.T) {
	t.Parallel()
	a, b, resA, resB, killed := lateTermRace(t, ctx(t))
	hb := b.c.cfg.HeartbeatInterval
	errA := <-resA
	errB := <-resB
	bLed := time.Now()
	require.NoError(t, errB)
	t.Logf("a's Campaign: %v; b led; a told by then: %v", errA, errA != nil || isClosed(a.Done()))
	if errA == nil {
		require.True(t, isClosed(a.Done()), "b leads while a, whose term was recorded after b read the old one, was never told")
	}
	t.Logf("b led %v after a's session was killed (grace %v)", bLed.Sub(killed).Round(time.Millisecond), 2*hb+hb/2)
	require.NoError(t, b.Resign(context.Background()))
}

// A Campaign that fails after its term was recorded (here its ctx ends
// during the grace owed to a term recorded late) marks that term resigned
// before it lets the lock go: it never led, so observers must not show it
// and no successor owes it a grace.
func TestFailedCampaignLeavesNoTerm(t *testing.T) {
	t.Parallel()
	bctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	a, b, resA, resB, _ := lateTermRace(t, bctx)
	// b's term is recorded and b waits out the grace (2.5 heartbeats)
	// owed to a's: its ctx ends now.
	cancel()
	<-resA
	require.ErrorIs(t, <-resB, context.Canceled, "b's ctx ends during the grace")
	var member string
	var resigned bool
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT member_id, resigned_at IS NOT NULL FROM pgcoord.elections WHERE election = $1`,
		b.full).Scan(&member, &resigned))
	require.Equal(t, b.c.MemberID(), member, "b's term is the recorded one")
	require.True(t, resigned, "b's term, which never led, is left unresigned")
	_ = a.Resign(context.Background())
}

// lateTermRace sets up a term recorded after its successor read the one
// before, and returns the predecessor a's and the successor b's Elections,
// their Campaigns' results (b's under bctx) and when a's session was
// killed. It returns once b's term is recorded, replacing a's, and b waits
// out the grace owed to a.
//
// The order is made certain, not left to the server: a row lock held by
// the test stops a's term's write; b, granted the lock once a's session is
// killed, reads the old term and is held there (Election.testHook) while
// the row lock goes and a's term commits; a is held after its write until
// b's has replaced it. (Left to the row lock alone, the two writes'
// order was not certain: each control statement gives up a lock wait after
// controlLockTimeout and tries again, so b's could go first; CI saw it.)
func lateTermRace(t *testing.T, bctx context.Context) (a, b *Election, resA, resB <-chan error, killed time.Time) {
	t.Helper()
	p := testPrefix(t)
	ca, cb := newCoord(t, p), newCoord(t, p)
	const name = "late-term"
	a, b = ca.Election(name), cb.Election(name)

	// A resigned term: a successor reading it owes nobody a grace.
	require.NoError(t, a.Campaign(ctx(t), "first"))
	require.NoError(t, a.Resign(ctx(t)))

	admin := connect(t, testURL)
	_, err := admin.Exec(ctx(t), `BEGIN`)
	require.NoError(t, err)
	_, err = admin.Exec(ctx(t), `SELECT FROM pgcoord.elections WHERE election = $1 FOR UPDATE`, a.full)
	require.NoError(t, err)

	aRecorded, aGo := make(chan struct{}), make(chan struct{})
	bRead, bGo, bRecorded := make(chan struct{}), make(chan struct{}), make(chan struct{})
	park := func(signal, gate chan struct{}) {
		close(signal)
		if gate != nil {
			select {
			case <-gate:
			case <-ctx(t).Done():
			}
		}
	}
	a.testHook = func(stage string) {
		if stage == "recorded" {
			park(aRecorded, aGo)
		}
	}
	b.testHook = func(stage string) {
		switch stage {
		case "read":
			park(bRead, bGo)
		case "recorded":
			park(bRecorded, nil)
		}
	}
	within := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal(what)
		}
	}

	// a wins the lock; its term's write waits for the row.
	resA = campaign(t, a, "a")
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%take\_term(%' AND application_name = $1`,
			ca.sessionTag).Scan(&n))
		return n == 1
	}, 10*time.Second, time.Millisecond)
	// b waits for the lock; a's session dies; b is granted the lock and
	// reads the resigned term.
	rb := make(chan error, 1)
	go func() { rb <- b.Campaign(bctx, "b") }()
	resB = rb
	requireCampaignWaiting(t, b, cb)
	pid := a.lock.BackendPID()
	require.NotZero(t, pid)
	_, err = testPool.Exec(ctx(t), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	killed = time.Now()
	// b's Campaign ending first (its wait failing) is told apart from a
	// slow read: make test once saw "b did not read the previous term"
	// on a loaded machine, and could not say which.
	select {
	case <-bRead:
	case err := <-rb:
		t.Fatalf("b's Campaign ended before it read the previous term: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("b did not read the previous term (b waiting on the server: %d, beyond the budget: %d)",
			waiters(t, b.lock.key), cb.Stats().WaitsBeyondBudget)
	}

	// a's term commits, then b's replaces it.
	_, err = admin.Exec(ctx(t), `ROLLBACK`)
	require.NoError(t, err)
	within(aRecorded, "a's term was not recorded")
	close(bGo)
	within(bRecorded, "b's term was not recorded")
	close(aGo)
	return a, b, resA, resB, killed
}

// pgcoord.take_term reports the term it replaced even when that term was
// the election's first, inserted while take_term ran: its insert fails on
// the key, and it reads the row then.
func TestTakeTermReportsFirstTermInsertedMeanwhile(t *testing.T) {
	t.Parallel()
	election := testPrefix(t) + "first"
	first := connect(t, testURL)
	_, err := first.Exec(ctx(t), `BEGIN`)
	require.NoError(t, err)
	var since time.Time
	require.NoError(t, first.QueryRow(ctx(t), `SELECT since FROM pgcoord.take_term($1, 7, 'm-first', 'v', 10)`, election).Scan(&since))

	type row struct {
		since    *time.Time
		member   *string
		token    *int64
		resigned *bool
	}
	got := make(chan row, 1)
	go func() {
		var r row
		err := testPool.QueryRow(ctx(t), `SELECT since, replaced_member, replaced_token, replaced_resigned
			FROM pgcoord.take_term($1, 7, 'm-second', 'v', 11)`, election).Scan(&r.since, &r.member, &r.token, &r.resigned)
		assert.NoError(t, err)
		got <- r
	}()
	// The second insert waits on the key for the first's transaction.
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%m-second%' AND query NOT LIKE '%pg_stat_activity%'`).Scan(&n))
		return n == 1
	}, 10*time.Second, time.Millisecond)
	_, err = first.Exec(ctx(t), `COMMIT`)
	require.NoError(t, err)
	r := <-got
	require.NotNil(t, r.since, "the newer term is recorded")
	require.NotNil(t, r.member)
	require.Equal(t, "m-first", *r.member)
	require.EqualValues(t, 10, *r.token)
	require.False(t, *r.resigned)

	// An older token is refused, and still told what is recorded.
	require.NoError(t, testPool.QueryRow(ctx(t), `SELECT since, replaced_member, replaced_token, replaced_resigned
		FROM pgcoord.take_term($1, 7, 'm-old', 'v', 9)`, election).Scan(&r.since, &r.member, &r.token, &r.resigned))
	require.Nil(t, r.since)
	require.Equal(t, "m-second", *r.member)
	require.EqualValues(t, 11, *r.token)
	_, err = testPool.Exec(ctx(t), `DELETE FROM pgcoord.elections WHERE election = $1`, election)
	require.NoError(t, err)
}

// Under REPEATABLE READ a first term committed while take_term waited is
// not visible to its reads: it fails with a serialization failure (40001),
// as INSERT ... ON CONFLICT does there, instead of looping for ever.
func TestTakeTermSerializationFailure(t *testing.T) {
	t.Parallel()
	election := testPrefix(t) + "rr"
	first := connect(t, testURL)
	_, err := first.Exec(ctx(t), `BEGIN`)
	require.NoError(t, err)
	_, err = first.Exec(ctx(t), `SELECT pgcoord.take_term($1, 7, 'm-first', 'v', 10)`, election)
	require.NoError(t, err)

	second := connect(t, testURL)
	_, err = second.Exec(ctx(t), `BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1`)
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		_, err := second.Exec(ctx(t), `SELECT pgcoord.take_term($1, 7, 'm-second', 'v', 11)`, election)
		got <- err
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, testPool.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND pid = $1`, second.PgConn().PID()).Scan(&n))
		return n == 1
	}, 10*time.Second, time.Millisecond)
	_, err = first.Exec(ctx(t), `COMMIT`)
	require.NoError(t, err)
	select {
	case err := <-got:
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%v", err)
		require.Equal(t, "40001", pgErr.Code, "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("take_term never returned under REPEATABLE READ")
	}
	_, err = second.Exec(ctx(t), `ROLLBACK`)
	require.NoError(t, err)
	_, err = testPool.Exec(ctx(t), `DELETE FROM pgcoord.elections WHERE election = $1`, election)
	require.NoError(t, err)
}
