package pgcoord

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sendHotBatch is sendPgxBatch through pgconn, for a batch of exclusive
// tries and unlocks only (the hot statements, see hot.go): one pgconn batch
// (the same messages and the one Sync at the end that pgx's pipeline
// sends, so a failed statement still skips the later ones), the results
// read as pgx's batch reads them: in order, stopping at the first error,
// which is returned; the failed op's result is recorded as sendPgxBatch's
// callbacks do (markerFailed included). sent false: nothing was sent,
// sendPgxBatch must serve ops (a shared op, a connection that keeps
// sqlc's path, nothing to send: pgx's empty batch still makes the round
// trip that doLocked counts as hearing from the server). One unlock and
// then one try are sent as one statement instead (see hotfused.go).
func (s *session) sendHotBatch(ctx context.Context, conn *pgx.Conn, ops []*lockOp) (sent bool, err error) {
	h := &s.hot
	if !h.on(conn) {
		return false, nil
	}
	var used [len(hotStmts)]*pgconn.StatementDescription
	n := 0
	for _, op := range ops {
		if op.skipped {
			continue
		}
		if op.h.shared {
			return false, nil
		}
		n++
	}
	if n == 0 {
		return false, nil
	}
	if u, t := fusable(ops); u != nil {
		if sent, err := s.sendFused(ctx, conn, u, t); sent {
			return true, err
		}
	}
	for _, op := range ops {
		st := hotStmtOf(op)
		if op.skipped || used[st] != nil {
			continue
		}
		sd, err := h.prepared(ctx, st)
		if err != nil {
			return true, err // as pgx's batch when a prepare fails: nothing ran
		}
		if sd == nil {
			return false, nil
		}
		used[st] = sd
	}
	var b pgconn.Batch
	for _, op := range ops {
		if op.skipped {
			continue
		}
		// The batch encodes the parameter at once: one buffer serves all.
		binary.BigEndian.PutUint64(h.arg[:], uint64(op.h.key))
		b.ExecStatement(used[hotStmtOf(op)], h.args[:], binaryFormat, binaryFormat)
	}
	mrr := conn.PgConn().ExecBatch(ctx, &b)
	for _, op := range ops {
		if op.skipped {
			continue
		}
		if err = h.readOp(mrr, op); err != nil {
			break
		}
	}
	if cerr := mrr.Close(); err == nil {
		err = cerr
	}
	if err != nil && !conn.IsClosed() {
		// As pgx invalidates every statement of a failed batch.
		for st, sd := range used {
			if sd != nil {
				h.stale[st] = true
			}
		}
	}
	return true, err
}

// hotStmtOf is op's statement.
func hotStmtOf(op *lockOp) hotStmt {
	if op.unlock {
		return hotUnlock
	}
	return hotTry
}

// readOp reads op's result, the next in mrr, into op as sendPgxBatch's
// callbacks do, and returns its error.
func (h *hotConn) readOp(mrr *pgconn.MultiResultReader, op *lockOp) error {
	var err error
	n := -1
	if !mrr.NextResult() {
		// The statement failed (its error ends the batch) or the
		// connection did.
		if err = mrr.Close(); err == nil {
			err = errors.New("pgcoord: a batch returned fewer results than statements")
		}
	} else {
		rr := mrr.ResultReader()
		row := rr.NextRow()
		if row {
			if v := rr.Values(); len(v) == 1 && v[0] != nil {
				n = copy(h.val[:], v[0])
			}
		}
		_, err = rr.Close()
		if err == nil && !row {
			err = pgx.ErrNoRows
		}
	}
	if err == nil {
		if op.unlock {
			op.released, err = h.decodeBool(n)
		} else {
			op.token, err = h.decodeInt8(n)
		}
	}
	op.ran = err == nil
	if op.unlock && markerFailed(err) {
		// The unlock ran (see markerFailed and sendPgxBatch).
		op.ran, op.released = true, true
	}
	return err
}
