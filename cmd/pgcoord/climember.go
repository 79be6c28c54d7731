package main

// The member that `run` and `elect` start: its default id, and its row
// deleted when it stops.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord"
)

// cliAgentID is the default agent id of a command's member: the command,
// the host and the process id ("run-web1-4242"), so `pgcoord members`,
// `locks` and `leader` say which process holds what. Two running
// processes of one host never share it (a second one with the same id
// would fail to start with ErrMemberExists).
func cliAgentID(command string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d", command, dash(host), os.Getpid())
}

// stopMember stops c and then deletes its member row. Each run of the
// command is a member of its own: kept for the library's retention (24h)
// like an application's, the rows of a cron job or of someone trying the
// command pile up by the hundred, and each says nothing once the process
// is gone. A process killed before it gets here (SIGKILL) leaves a silent
// row that coordinators prune after their retention.
func stopMember(a *app, c *pgcoord.Coordinator, url string) {
	// Stop must run even after a signal cancelled a.ctx: it releases
	// whatever is still held and marks the member stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		fmt.Fprintf(a.stderr, "pgcoord %s: stopping: %v\n", a.name, err)
		return
	}
	if err := forgetMember(ctx, url, c.MemberID()); err != nil {
		fmt.Fprintf(a.stderr, "pgcoord %s: deleting member row %q (left for pruning): %v\n", a.name, c.MemberID(), err)
	}
}

// forgetMember deletes the stopped member's row. A role without DELETE on
// pgcoord.members leaves it to pruning, silently: docs/grants.sql grants
// it, and older grants are not an error.
func forgetMember(ctx context.Context, url, memberID string) error {
	conn, err := connect(ctx, url, "pgcoord-cli")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	_, err = queries.ForgetStoppedMember(ctx, conn, memberID)
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "42501" {
		return nil
	}
	return err
}
