package main

import (
	"fmt"

	"github.com/pgcoord/pgcoord"
)

// cmdMigrate applies the embedded migrations. Coordinators do it on Start
// too; this is for deployments whose coordinators run with SkipMigrations
// under a role that may not create schemas.
func cmdMigrate(a *app, args []string) int {
	fs := newFlagSet(a, "pgcoord migrate [--database-url URL]",
		"Applies pgcoord's schema migrations (schema pgcoord) to the database.\n"+
			"Safe to run repeatedly and from several processes at once.")
	dbURL := dbFlag(fs)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if code, done := a.noArgs(fs); done {
		return code
	}
	url, err := a.database(*dbURL)
	if err != nil {
		return a.fail(err)
	}
	if err := pgcoord.Migrate(a.ctx, url); err != nil {
		return a.fail(err)
	}
	fmt.Fprintln(a.stdout, "pgcoord schema is up to date")
	return exitOK
}
