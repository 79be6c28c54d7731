package pgcoord

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/jackc/pgx/v5"
)

// A lock session's batch of one unlock and then one exclusive try, skipped
// ops aside, is sent as one statement, UnlockTry (queries/locks.sql): the
// two statements in one, one Bind and Execute instead of two. That is
// every cycle under Config.AsyncRelease, whose unlock rides with the next
// try, and its ceiling: pgbench puts the pair at 1.77 of raw's two round
// trips when piped and 1.84 in one statement (docs/performance.md).
//
// What the server does is the batch's: the unlock (with its wait marker's
// NOTIFY) comes first, then the try, in one implicit transaction, as the
// batch's two statements before its one Sync are. Only a failure reads
// differently: the batch's says which statement failed, the fused
// statement's does not, and both parts hold session-level locks, which a
// failed transaction does not roll back. So after a failure on a
// connection that stays open the unlock's key is released outright (a
// plain unlock, retryUnlock: whether or not the failed statement's unlock
// ran, the key is not held for that hold afterwards) and the try is left
// unrun, for runBatch to undo whatever it took and run it again on its
// own, as after a failed batch.

// fusable returns ops' unlock and try when, skipped ops aside, ops are one
// unlock and then one try; nil otherwise. sendHotBatch has checked that no
// op is shared.
func fusable(ops []*lockOp) (u, t *lockOp) {
	for _, op := range ops {
		switch {
		case op.skipped:
		case u == nil && op.unlock:
			u = op
		case u != nil && t == nil && !op.unlock:
			t = op
		default:
			return nil, nil
		}
	}
	if t == nil {
		return nil, nil
	}
	return u, t
}

// sendFused runs u and t as UnlockTry on conn and records their results as
// readOp does for a batch. sent false: nothing was sent, the statement is
// not served on this connection (see hotConn.prepared).
func (s *session) sendFused(ctx context.Context, conn *pgx.Conn, u, t *lockOp) (sent bool, err error) {
	h := &s.hot
	sd, err := h.prepared(ctx, hotUnlockTry)
	if err != nil {
		return true, err // as a batch whose prepare failed: nothing ran
	}
	if sd == nil {
		return false, nil
	}
	binary.BigEndian.PutUint64(h.arg[:8], uint64(t.h.key))
	binary.BigEndian.PutUint64(h.arg[12:], uint64(u.h.key))
	rr := conn.PgConn().ExecStatement(ctx, sd, h.uargs[:], binaryFormat, binaryFormat)
	var released, decoded bool
	var tok int64
	row := rr.NextRow()
	if row {
		if v := rr.Values(); len(v) == 2 && len(v[0]) == 1 && len(v[1]) == 8 {
			released, tok, decoded = v[0][0] != 0, int64(binary.BigEndian.Uint64(v[1])), true
		}
	}
	_, err = rr.Close()
	switch {
	case err == nil && !row:
		err = pgx.ErrNoRows // as QueryRow's Scan
	case err == nil && !decoded:
		err = errors.New("pgcoord: UnlockTry returned a row of unexpected values")
	}
	if err == nil {
		u.ran, u.released = true, released
		t.ran, t.token = true, tok
		return true, nil
	}
	if conn.IsClosed() {
		return true, err // every lock of the session went with it
	}
	h.stale[hotUnlockTry] = true // as pgx's statement cache does
	if s.retryUnlock(ctx, conn, u.h) {
		u.ran, u.released = true, true
	}
	return true, err
}
