package pgcoord

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// connHooks are Config.Pool's BeforeConnect and AfterConnect, run around
// every connection pgcoord opens itself, so that what an app does there
// (a fresh IAM token as password, types registered, a role set) applies to
// pgcoord's sessions too. The pool's other hooks (BeforeAcquire,
// AfterRelease, PrepareConn, BeforeClose) are about lending pooled
// connections, which pgcoord never does, so they are not run.
type connHooks struct {
	before func(context.Context, *pgx.ConnConfig) error
	after  func(context.Context, *pgx.Conn) error
}

// hooksOf returns pool's connect hooks; none for a nil pool.
func hooksOf(pool *pgxpool.Pool) connHooks {
	if pool == nil {
		return connHooks{}
	}
	cfg := pool.Config()
	return connHooks{before: cfg.BeforeConnect, after: cfg.AfterConnect}
}

// dial opens a connection from a copy of base, named appName in
// pg_stat_activity, with the hooks run around it. appName is set after
// BeforeConnect: the held_locks view joins on a coordinator's tag, so a hook
// must not rename its sessions.
func (h connHooks) dial(ctx context.Context, base *pgx.ConnConfig, appName string) (*pgx.Conn, error) {
	conn, _, err := h.dialWithin(ctx, base, appName, 0)
	return conn, err
}

// dialWithin is dial with each host's connection setup bounded by bound
// too, when bound is positive and shorter than the connection's own
// ConnectTimeout (as BeforeConnect left it); capped reports whether bound
// was the shorter one (see dialSession).
func (h connHooks) dialWithin(ctx context.Context, base *pgx.ConnConfig, appName string, bound time.Duration) (conn *pgx.Conn, capped bool, err error) {
	cc := base.Copy()
	if h.before != nil {
		if err := h.before(ctx, cc); err != nil {
			return nil, false, fmt.Errorf("the pool's BeforeConnect: %w", err)
		}
	}
	cc.RuntimeParams["application_name"] = appName
	if bound > 0 && (cc.ConnectTimeout == 0 || bound < cc.ConnectTimeout) {
		cc.ConnectTimeout = bound
		capped = true
	}
	conn, err = pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, capped, err
	}
	if h.after != nil {
		if err := h.after(ctx, conn); err != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, false, fmt.Errorf("the pool's AfterConnect: %w", err)
		}
	}
	return conn, capped, nil
}

// openDB is a database/sql handle over base with the hooks, for
// golang-migrate.
func (h connHooks) openDB(base *pgx.ConnConfig, appName string) *sql.DB {
	return stdlib.OpenDB(*base, stdlib.OptionBeforeConnect(func(ctx context.Context, cc *pgx.ConnConfig) error {
		if h.before != nil {
			if err := h.before(ctx, cc); err != nil {
				return fmt.Errorf("the pool's BeforeConnect: %w", err)
			}
		}
		cc.RuntimeParams["application_name"] = appName
		return nil
	}), stdlib.OptionAfterConnect(func(ctx context.Context, conn *pgx.Conn) error {
		if h.after != nil {
			if err := h.after(ctx, conn); err != nil {
				return fmt.Errorf("the pool's AfterConnect: %w", err)
			}
		}
		return nil
	}))
}
