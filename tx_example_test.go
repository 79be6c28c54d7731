package pgcoord_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord"
)

// Two transactions, as two requests behind PgBouncer in transaction mode
// would run them: the second cannot take the name while the first holds it,
// and waits no longer than its Timeout, after which its transaction carries
// on. The first transaction's lock ends with it.
func ExampleAcquireTx() {
	ctx := context.Background()
	// An app would use its own pool (through its transaction pooler).
	pool, err := pgxpool.New(ctx, os.Getenv("PGCOORD_EXAMPLE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	a, _ := pool.Begin(ctx)
	ok, err := pgcoord.AcquireTx(ctx, a, "billing/", "invoice-42", pgcoord.NoWait)
	fmt.Println("a acquired:", ok, err)

	err = pgx.BeginFunc(ctx, pool, func(b pgx.Tx) error {
		ok, err := pgcoord.AcquireTx(ctx, b, "billing/", "invoice-42", pgcoord.Timeout(100*time.Millisecond))
		fmt.Println("b acquired while a holds:", ok, err)
		_, err = b.Exec(ctx, "SELECT 1") // b is still usable after the timeout
		return err
	})
	fmt.Println("b committed:", err)

	fmt.Println("a committed:", a.Commit(ctx))
	err = pgx.BeginFunc(ctx, pool, func(b pgx.Tx) error {
		ok, err := pgcoord.AcquireTx(ctx, b, "billing/", "invoice-42", pgcoord.NoWait)
		fmt.Println("b acquired after a committed:", ok, err)
		return err
	})
	fmt.Println("b committed:", err)
	// Output:
	// a acquired: true <nil>
	// b acquired while a holds: false <nil>
	// b committed: <nil>
	// a committed: <nil>
	// b acquired after a committed: true <nil>
	// b committed: <nil>
}
