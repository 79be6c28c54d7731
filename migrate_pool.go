package pgcoord

import (
	"context"
	"database/sql"

	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// MigratePool is Migrate through an app's pool: it borrows one of pool's
// connections to create the schema and one for golang-migrate (which holds
// a session advisory lock while it works and releases it before giving the
// connection back), so the pool's settings and hooks apply. The pool stays
// open.
func MigratePool(ctx context.Context, pool *pgxpool.Pool) error {
	if pool == nil {
		return fmt.Errorf("%w: MigratePool: nil pool", ErrInvalidConfig)
	}
	return migrateTo(ctx, poolTarget(pool), slog.Default())
}

// poolTarget migrates over pool's connections.
func poolTarget(pool *pgxpool.Pool) migrationTarget {
	return migrationTarget{
		conn: func(ctx context.Context) (*pgx.Conn, func(), error) {
			pc, err := pool.Acquire(ctx)
			if err != nil {
				return nil, nil, err
			}
			return pc.Conn(), pc.Release, nil
		},
		openDB: func() *sql.DB { return stdlib.OpenDBFromPool(pool) },
		user:   pool.Config().ConnConfig.User,
	}
}
