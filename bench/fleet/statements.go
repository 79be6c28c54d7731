package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
)

// The statement profile (-statements N): where a mode's server time goes.
// pg_stat_statements counts every statement the clients ran; after each
// mode the N statements with the most execution time are printed to
// stderr, with their calls per acquisition, so a change to the wait path
// can be judged by the statements it costs the server, not only by the
// throughput it gets on a busy machine.

// statementSettings are the server settings the profile needs.
var statementSettings = map[string]string{
	"shared_preload_libraries": "pg_stat_statements",
	"pg_stat_statements.track": "all", // statements inside pgcoord's functions too
	"pg_stat_statements.max":   "1000",
}

// resetStatements creates the extension if needed and clears its counts.
func resetStatements(ctx context.Context, base string) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

// printStatements prints the top n statements by total execution time.
func printStatements(ctx context.Context, base, mode string, n int, acquired int64) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT calls, total_exec_time, mean_exec_time, max_exec_time, toplevel,
		       regexp_replace(left(query, 110), '\s+', ' ', 'g')
		FROM pg_stat_statements
		WHERE query NOT LIKE '%pg_stat_statements%'
		ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return err
	}
	defer rows.Close()
	per := float64(max(acquired, 1))
	fmt.Fprintf(os.Stderr, "%s: top %d statements by server time (%d acquisitions; nested: inside a function)\n", mode, n, acquired)
	fmt.Fprintf(os.Stderr, "%10s %8s %10s %8s %8s %6s  %s\n", "calls", "/acq", "total ms", "mean ms", "max ms", "level", "query")
	for rows.Next() {
		var calls int64
		var total, mean, longest float64
		var top bool
		var q string
		if err := rows.Scan(&calls, &total, &mean, &longest, &top, &q); err != nil {
			return err
		}
		level := "top"
		if !top {
			level = "nested"
		}
		fmt.Fprintf(os.Stderr, "%10d %8.2f %10.0f %8.3f %8.0f %6s  %s\n", calls, float64(calls)/per, total, mean, longest, level, q)
	}
	return rows.Err()
}
