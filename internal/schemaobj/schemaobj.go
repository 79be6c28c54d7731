// Package schemaobj lists the objects of schema pgcoord that pgcoord needs,
// and finds those a database lacks: Start and the pgcoord command check
// them, not only schema_migrations' version, so a schema changed by hand
// (a dropped view, a function missing) fails at once and by name instead of
// in the first Acquire that needs it.
package schemaobj

import (
	"context"

	"github.com/pgcoord/pgcoord/db"
)

// View is one of the views for people: the public SQL surface, its columns
// in order (docs/surface.md says what each means; a test pins them).
type View struct {
	Name    string
	Columns []string
}

// Views are pgcoord's views and their columns.
var Views = []View{
	{"live_members", []string{"member_id", "prefix", "agent_id", "hostname", "pid", "started_at",
		"last_heartbeat", "stopped_at", "heartbeat_interval", "session_tag", "member_key",
		"backend_pid", "lease", "heartbeat_age"}},
	{"held_locks", []string{"name", "key", "mode", "member_id", "granted", "since", "backend_pid"}},
	{"leaders", []string{"election", "member_id", "value", "token", "since", "hostname", "pid"}},
	{"semaphore_holders", []string{"semaphore", "slots", "slot", "member_id", "since", "backend_pid"}},
	{"live_group_members", []string{"group_name", "member_id", "capabilities", "joined_at",
		"updated_at", "prefix", "agent_id", "hostname", "pid", "started_at", "last_heartbeat"}},
}

// Tables and sequences the library reads and writes.
var Tables = []string{"members", "locks", "fences", "lock_since", "elections", "semaphores",
	"group_members", "long_waits", "wait_queue", "wait_queue_ticket_seq", "fencing_token"}

// Functions of the schema, with their argument types: those the library
// calls, and begin_term, which coordinators of older versions call.
var Functions = []string{
	"lock_key(text)", "timeline_floor()", "raise_token_floor()", "next_token()",
	"wait_lock(bigint,integer)", "wait_lock_shared(bigint,integer)", "fence_ok(bigint,bigint)",
	"begin_term(text,bigint,text,text,bigint)", "take_term(text,bigint,text,text,bigint)",
	"proclaim(text,bigint,text)", "end_term(text,bigint)",
	"semaphore_slot_key(text,integer,integer)", "xact_lock(bigint,boolean,integer)", "xact_fence(bigint)",
	"queue_enter(bigint,boolean,text,bigint)", "queue_head(bigint,bigint,boolean)", "queue_leave(bigint,bigint)",
	"queue_lock(bigint)",
}

// Missing returns what schema pgcoord lacks of Tables, Views (and their
// columns) and Functions, each named with its kind ("relation
// pgcoord.held_locks", "function pgcoord.next_token()", "column
// pgcoord.held_locks.since"); nil when it is whole. One round trip.
func Missing(ctx context.Context, conn db.DBTX) ([]string, error) {
	var p db.MissingSchemaObjectsParams
	for _, t := range Tables {
		p.Relations = append(p.Relations, "pgcoord."+t)
	}
	for _, v := range Views {
		p.Relations = append(p.Relations, "pgcoord."+v.Name)
		for _, c := range v.Columns {
			p.Columns = append(p.Columns, "pgcoord."+v.Name+"."+c)
		}
	}
	for _, f := range Functions {
		p.Functions = append(p.Functions, "pgcoord."+f)
	}
	return db.New().MissingSchemaObjects(ctx, conn, p)
}
