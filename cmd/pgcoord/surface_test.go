package main

import (
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// surfaceRow is a row of a table in docs/surface.md: its first cell, names
// in backticks (several in one cell are separated by ", ").
var surfaceRow = regexp.MustCompile("^\\| `([^|]+)` \\|")

// surfaceTables reads docs/surface.md: for each heading, the names in the
// first column of its table, in order.
func surfaceTables(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/surface.md")
	require.NoError(t, err)
	out := map[string][]string{}
	heading := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
			continue
		}
		if m := surfaceRow.FindStringSubmatch(line); m != nil {
			out[heading] = append(out[heading], m[1])
		}
	}
	return out
}

// jsonFields lists the JSON names of v's fields, in order.
func jsonFields(v any) []string {
	var out []string
	typ := reflect.TypeOf(v)
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		out = append(out, name)
	}
	return out
}

// The CLI's JSON fields and exit codes are pinned: the code's and
// docs/surface.md's are the same, in order, so renaming or adding one is a
// deliberate change to both (and the changelog). pid is a client's process
// and backend_pid a server backend, as in the SQL views.
func TestCLISurfacePinned(t *testing.T) {
	t.Parallel()
	docs := surfaceTables(t)
	for heading, v := range map[string]any{
		"pgcoord locks --json":            heldLockJSON{},
		"pgcoord members --json":          memberJSON{},
		"pgcoord leader --json":           leaderJSON{},
		"pgcoord leader --json: leader":   leaderJSONTerm{},
		"pgcoord migrate --json":          migrateResult{},
		"pgcoord migrate --status --json": schemaState{},
		"pgcoord prune --json":            pruneJSON{},
	} {
		require.Equal(t, jsonFields(v), docs[heading], "%s: the code's fields and docs/surface.md's", heading)
	}
	require.Contains(t, jsonFields(heldLockJSON{}), "backend_pid")
	require.NotContains(t, jsonFields(heldLockJSON{}), "pid")
	require.Contains(t, jsonFields(memberJSON{}), "pid")

	var codes []string
	for _, c := range []int{exitOK, exitError, exitUsage, exitBusy, exitUnavailable, exitLockLost,
		exitNoDatabase, exitCannotExec, exitNotFound} {
		codes = append(codes, strconv.Itoa(c))
	}
	codes = append(codes, strconv.Itoa(exitSignalBase)+"+N")
	require.Equal(t, codes, docs["Exit codes"], "the exit codes and docs/surface.md's")
}
