package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// demoHeldLocks is held_locks restricted to the demo's names and members.
func demoHeldLocks(ctx context.Context, conn *pgx.Conn) ([]db.ListHeldLocksRow, error) {
	rows, err := queries.ListHeldLocks(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("listing held locks: %w", err)
	}
	var out []db.ListHeldLocksRow
	for _, r := range rows {
		if strings.HasPrefix(r.Name, demoPrefix) || strings.HasPrefix(r.MemberID, demoPrefix) {
			out = append(out, r)
		}
	}
	return out, nil
}

// demoMembers is pgcoord.members restricted to the demo's members, and the
// server's clock.
func demoMembers(ctx context.Context, conn *pgx.Conn) ([]db.ListMembersRow, time.Time, error) {
	rows, err := queries.ListMembers(ctx, conn)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("listing members: %w", err)
	}
	now, err := serverNow(ctx, conn)
	if err != nil {
		return nil, time.Time{}, err
	}
	var out []db.ListMembersRow
	for _, r := range rows {
		if r.Prefix == demoPrefix {
			out = append(out, r)
		}
	}
	return out, now, nil
}
