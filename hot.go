package pgcoord

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcoord/pgcoord/db"
)

// The uncontended path's two statements, an exclusive hold's TryLock and
// Unlock, and the contended path's WaitLock, run through the connection's pgconn instead of sqlc's wrappers
// over pgx's QueryRow and Scan: the same SQL (queries/locks.sql), prepared
// once per connection, with the key sent and the one value read in binary
// from a buffer the session keeps. pgx's path costs about six allocations a
// statement (the variadic arguments and their boxing, the Rows, the scan
// plan); this one costs pgconn's command tag alone (issue 18: 22 allocations
// per Acquire+Release against raw pgx's 11). Everything else is as pgx's
// default mode (QueryExecModeCacheStatement) does it: the statement is
// prepared on first use, errors are pgconn's own (*pgconn.PgError for the
// server's), pgconn closes the connection on a network error or a
// cancellation exactly as under pgx, and a statement that failed on a
// connection that stayed open is deallocated and prepared again before its
// next use, as pgx's statement cache does. A connection whose config asks
// for anything else (another QueryExecMode, a tracer, no statement cache,
// from the connection string or the pool's BeforeConnect) keeps sqlc's path.

// hotStmt names one of the statements.
type hotStmt uint8

const (
	hotTry hotStmt = iota
	hotUnlock
	hotWait
	hotUnlockTry
)

// keyParam is the parameters of a statement that takes the key alone.
var keyParam = []uint32{pgtype.Int8OID}

// hotStmts are the statements' server-side names (their own, so that pgx's
// statement cache, which serves the same SQL in batches, is not touched),
// text, and the types of their parameters and of their result columns.
var hotStmts = [...]struct {
	name, sql       string
	params, results []uint32
}{
	hotTry:    {"pgcoord_hot_try_lock", db.TryLock, keyParam, []uint32{pgtype.Int8OID}},
	hotUnlock: {"pgcoord_hot_unlock", db.Unlock, keyParam, []uint32{pgtype.BoolOID}},
	// WaitLock's parameters are the slice's timeout (ms), then the key.
	hotWait: {"pgcoord_hot_wait_lock", db.WaitLock, []uint32{pgtype.Int4OID, pgtype.Int8OID}, []uint32{pgtype.Int8OID}},
	// UnlockTry's are the try's key, then the unlock's (see hotfused.go).
	hotUnlockTry: {"pgcoord_hot_unlock_try", db.UnlockTry, []uint32{pgtype.Int8OID, pgtype.Int8OID}, []uint32{pgtype.BoolOID, pgtype.Int8OID}},
}

// binaryFormat asks for the parameter and the result in binary; pgconn
// only reads it.
var binaryFormat = []int16{pgtype.BinaryFormatCode}

// hotConn is a session's state for the hot statements on one connection;
// guarded by the session's sem.
type hotConn struct {
	// conn is the connection the fields below belong to: a new one starts
	// afresh (see on).
	conn *pgx.Conn
	// off: conn's config asks for something pgconn's path would not do
	// (see hotAllowed); sqlc's path serves it.
	off bool
	sd  [len(hotStmts)]*pgconn.StatementDescription
	// stale marks a statement that failed on conn while it stayed open:
	// deallocated and prepared again before its next use.
	stale [len(hotStmts)]bool
	// arg holds the key in binary (arg[:8]), a wait's timeout
	// (arg[8:12]) and UnlockTry's unlock key (arg[12:]); args is the
	// parameter of a statement that takes the key alone, wargs WaitLock's
	// two, uargs UnlockTry's: kept here so that no statement allocates
	// them.
	arg   [20]byte
	args  [1][]byte
	wargs [2][]byte
	uargs [2][]byte
	// val is the result's value, copied out before pgconn's buffer is
	// reused.
	val [8]byte
}

// on readies h for conn and reports whether the hot path serves it.
func (h *hotConn) on(conn *pgx.Conn) bool {
	if h.conn != conn {
		*h = hotConn{conn: conn, off: !hotAllowed(conn.Config())}
		h.args[0] = h.arg[:8]
		h.wargs[0], h.wargs[1] = h.arg[8:12], h.arg[:8]
		h.uargs[0], h.uargs[1] = h.arg[:8], h.arg[12:]
	}
	return !h.off
}

// hotAllowed reports whether pgconn's path does what pgx would do with
// cfg: pgx's default mode, with a statement cache and no tracer.
func hotAllowed(cfg *pgx.ConnConfig) bool {
	return cfg.Tracer == nil && cfg.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement &&
		cfg.StatementCacheCapacity > 0
}

// prepared returns st's description on h.conn, preparing it first if
// needed; nil (and no error) when the server's description is not the
// one expected, which leaves st to sqlc's path on this connection.
func (h *hotConn) prepared(ctx context.Context, st hotStmt) (*pgconn.StatementDescription, error) {
	if sd := h.sd[st]; sd != nil && !h.stale[st] {
		return sd, nil
	}
	conn, def := h.conn, hotStmts[st]
	if h.stale[st] {
		// As pgx's statement cache does with a statement that failed:
		// the server's copy may be what failed (a DISCARD, a changed
		// plan), so it is replaced.
		if err := conn.Deallocate(ctx, def.name); err != nil {
			return nil, err
		}
		h.sd[st], h.stale[st] = nil, false
	}
	sd, err := conn.Prepare(ctx, def.name, def.sql)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(sd.ParamOIDs, def.params) || !fieldTypes(sd.Fields, def.results) {
		h.off = true
		return nil, nil
	}
	h.sd[st] = sd
	return sd, nil
}

// fieldTypes reports whether fields are of the types want, in order.
func fieldTypes(fields []pgconn.FieldDescription, want []uint32) bool {
	if len(fields) != len(want) {
		return false
	}
	for i, f := range fields {
		if f.DataTypeOID != want[i] {
			return false
		}
	}
	return true
}

// query runs st with key (and for hotWait timeoutMs) on h.conn and returns
// the length of the one value of its one row, copied to h.val (-1 for
// NULL). ok false (and no error) means the hot path does not serve this
// connection after all (see prepared).
func (h *hotConn) query(ctx context.Context, st hotStmt, key int64, timeoutMs int32) (n int, ok bool, err error) {
	sd, err := h.prepared(ctx, st)
	if err != nil {
		return 0, true, err
	}
	if sd == nil {
		return 0, false, nil
	}
	binary.BigEndian.PutUint64(h.arg[:8], uint64(key))
	args := h.args[:]
	if st == hotWait {
		binary.BigEndian.PutUint32(h.arg[8:12], uint32(timeoutMs))
		args = h.wargs[:]
	}
	rr := h.conn.PgConn().ExecStatement(ctx, sd, args, binaryFormat, binaryFormat)
	row := rr.NextRow()
	if row {
		n = -1
		if v := rr.Values(); len(v) == 1 && v[0] != nil {
			n = copy(h.val[:], v[0])
		}
	}
	_, err = rr.Close()
	if err == nil && !row {
		err = pgx.ErrNoRows // as QueryRow's Scan
	}
	if err != nil && !h.conn.IsClosed() && !isLockTimeout(err) {
		// A wait's slice that ended with the lock still busy is the
		// statement doing its job: its server copy is fine, and pgx's
		// invalidation of it after every slice (it drops the statement on
		// any error) would cost each long wait a prepare per second.
		h.stale[st] = true
	}
	return n, true, err
}

// tryLock runs TryLock for key: the token candidate, 0 when busy. ok false:
// not served here, run sqlc's TryLock.
func (h *hotConn) tryLock(ctx context.Context, key int64) (tok int64, ok bool, err error) {
	n, ok, err := h.query(ctx, hotTry, key, 0)
	if !ok || err != nil {
		return 0, ok, err
	}
	tok, err = h.decodeInt8(n)
	return tok, true, err
}

// waitLock runs WaitLock for key for at most timeoutMs: the token
// candidate; a slice that ended with the key still busy fails with the
// server's lock_timeout (55P03), as sqlc's WaitLock does. ok false: not
// served here, run sqlc's WaitLock.
func (h *hotConn) waitLock(ctx context.Context, key int64, timeoutMs int32) (tok int64, ok bool, err error) {
	n, ok, err := h.query(ctx, hotWait, key, timeoutMs)
	if !ok || err != nil {
		return 0, ok, err
	}
	tok, err = h.decodeInt8(n)
	return tok, true, err
}

// decodeInt8 reads a bigint of n bytes from h.val (n -1: NULL).
func (h *hotConn) decodeInt8(n int) (int64, error) {
	if n != 8 {
		return 0, fmt.Errorf("pgcoord: a lock statement returned %d bytes for a bigint", n)
	}
	return int64(binary.BigEndian.Uint64(h.val[:])), nil
}

// decodeBool reads a boolean of n bytes from h.val (n -1: NULL).
func (h *hotConn) decodeBool(n int) (bool, error) {
	if n != 1 {
		return false, fmt.Errorf("pgcoord: Unlock returned %d bytes for a boolean", n)
	}
	return h.val[0] != 0, nil
}

// unlock runs Unlock for key: whether the session held it. ok false: not
// served here, run sqlc's Unlock.
func (h *hotConn) unlock(ctx context.Context, key int64) (released, ok bool, err error) {
	n, ok, err := h.query(ctx, hotUnlock, key, 0)
	if !ok || err != nil {
		return false, ok, err
	}
	released, err = h.decodeBool(n)
	return released, true, err
}
