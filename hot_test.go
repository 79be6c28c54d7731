package pgcoord

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/db"
)

// The hot path (hot.go) must behave as sqlc's TryLock and Unlock over pgx
// do: the same results, the server's errors as *pgconn.PgError, and a
// statement that failed on an open connection prepared again before its
// next use, as pgx's statement cache does.
func TestHotPathAsPgx(t *testing.T) {
	ctx := ctx(t)
	conn, err := pgx.Connect(ctx, testURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var h hotConn
	require.True(t, h.on(conn), "the default config takes the hot path")
	key := int64(0x407_7e57)

	tok, ok, err := h.tryLock(ctx, key)
	require.True(t, ok)
	require.NoError(t, err)
	require.Positive(t, tok)
	again, err := db.New().TryLock(ctx, conn, key) // sqlc's; the session holds the key twice
	require.NoError(t, err)
	require.Greater(t, again, tok)
	for range 2 {
		released, ok, err := h.unlock(ctx, key)
		require.True(t, ok)
		require.NoError(t, err)
		require.True(t, released)
	}
	released, _, err := h.unlock(ctx, key)
	require.NoError(t, err)
	require.False(t, released, "the key is free: Unlock says so, as sqlc's does")

	// A server error is pgconn's, and leaves the connection open.
	_, err = conn.Exec(ctx, "BEGIN")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT 1/0")
	require.Error(t, err)
	_, _, err = h.tryLock(ctx, key)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25P02", pgErr.Code, "in a failed transaction")
	require.False(t, conn.IsClosed())
	require.True(t, h.stale[hotTry])
	_, err = conn.Exec(ctx, "ROLLBACK")
	require.NoError(t, err)

	// The server's statement gone behind the session's back: one failure,
	// then prepared again.
	_, err = conn.Exec(ctx, "DEALLOCATE ALL")
	require.NoError(t, err)
	_, _, err = h.unlock(ctx, key)
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "26000", pgErr.Code, "prepared statement does not exist")
	released, _, err = h.unlock(ctx, key)
	require.NoError(t, err)
	require.False(t, released)
	tok, _, err = h.tryLock(ctx, key) // deallocated and prepared again too
	require.NoError(t, err)
	require.Positive(t, tok)
	released, _, err = h.unlock(ctx, key)
	require.NoError(t, err)
	require.True(t, released)

	// A network error closes the connection, as under pgx.
	require.NoError(t, conn.PgConn().Conn().Close())
	_, _, err = h.tryLock(ctx, key)
	require.Error(t, err)
	require.True(t, conn.IsClosed())
}

// nopTracer is a query tracer that does nothing: its presence alone keeps
// sqlc's path, so that a tracer sees every statement.
type nopTracer struct{}

func (nopTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (nopTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A connection whose config asks for anything pgconn's path would not do
// keeps sqlc's path.
func TestHotPathOnlyForPgxDefaults(t *testing.T) {
	for name, mod := range map[string]func(*pgx.ConnConfig){
		"exec mode":       func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeExec },
		"simple protocol": func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol },
		"no cache":        func(c *pgx.ConnConfig) { c.StatementCacheCapacity = 0 },
		"tracer":          func(c *pgx.ConnConfig) { c.Tracer = nopTracer{} },
	} {
		cfg, err := pgx.ParseConfig(testURL)
		require.NoError(t, err)
		require.True(t, hotAllowed(cfg))
		mod(cfg)
		require.False(t, hotAllowed(cfg), name)
	}
}

// Acquire and Release of an exclusive lock take the hot path on a lock
// session with the default config, and sqlc's path when the connection
// string asks for another exec mode; either way they work.
func TestHotPathServesAcquire(t *testing.T) {
	for _, mode := range []string{"", "exec"} {
		url := testURL
		if mode != "" {
			sep := "?"
			if strings.Contains(url, "?") {
				sep = "&"
			}
			url += sep + "default_query_exec_mode=" + mode
		}
		c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = url })
		l := c.GetLock("hot")
		for range 2 {
			ok, err := l.Acquire(ctx(t), NoWait)
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, l.Release(ctx(t)))
		}
		s := c.lockSession(l.key)
		s.sem <- struct{}{}
		hot := s.hot.sd[hotTry] != nil && s.hot.sd[hotUnlock] != nil
		off := s.hot.off
		<-s.sem
		require.Equal(t, mode == "", hot, "mode %q", mode)
		require.Equal(t, mode != "", off, "mode %q", mode)
	}
}

// hotPrepared reports whether st is prepared on s's connection: the hot
// path served it there.
func hotPrepared(s *session, st hotStmt) bool {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	return s.hot.sd[st] != nil
}

// WaitLock on the hot path behaves as sqlc's: a slice that ends with the
// key still busy fails with lock_timeout (55P03) and leaves the connection
// open and the statement prepared (pgx would drop it; a long wait would
// prepare it again every slice), and a wait granted returns a token.
func TestHotWaitAsPgx(t *testing.T) {
	ctx := ctx(t)
	holder, conn := connect(t, testURL), connect(t, testURL)
	key := int64(0x407_3a17)
	_, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1)", key)
	require.NoError(t, err)

	var h hotConn
	require.True(t, h.on(conn))
	_, ok, err := h.waitLock(ctx, key, 50)
	require.True(t, ok)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "55P03", pgErr.Code, "lock_timeout")
	require.True(t, isLockTimeout(err))
	require.False(t, conn.IsClosed())
	require.False(t, h.stale[hotWait], "a slice's timeout keeps the statement")
	sd := h.sd[hotWait]
	require.NotNil(t, sd)

	_, err = holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
	require.NoError(t, err)
	tok, _, err := h.waitLock(ctx, key, 1000)
	require.NoError(t, err)
	require.Positive(t, tok)
	require.Same(t, sd, h.sd[hotWait], "prepared once")
	var held bool
	require.NoError(t, holder.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&held))
	require.False(t, held, "the wait holds the key")
	released, _, err := h.unlock(ctx, key)
	require.NoError(t, err)
	require.True(t, released)
}

// A waiting Acquire's exclusive wait takes the hot path on its wait
// session.
func TestHotWaitServesAcquire(t *testing.T) {
	p := testPrefix(t)
	c, other := newCoord(t, p), newCoord(t, p)
	l, ol := c.GetLock("hotwait"), other.GetLock("hotwait")
	ok, err := ol.Acquire(ctx(t), NoWait)
	require.NoError(t, err)
	require.True(t, ok)
	got := make(chan error, 1)
	go func() {
		ok, err := l.Acquire(ctx(t), Wait)
		if err == nil && !ok {
			err = errors.New("not acquired")
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return len(c.waits.all()) > 0 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, ol.Release(ctx(t)))
	require.NoError(t, <-got)
	defer func() { require.NoError(t, l.Release(ctx(t))) }()
	hot := false
	for _, s := range c.waits.all() {
		hot = hot || hotPrepared(s, hotWait)
	}
	require.True(t, hot, "the wait ran on the hot path")
}
