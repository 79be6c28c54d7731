package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memberRows returns the member ids of prefix's rows in pgcoord.members.
func memberRows(t *testing.T, prefix string) []string {
	t.Helper()
	rows, err := testPool.Query(context.Background(), `SELECT member_id FROM pgcoord.members WHERE prefix = $1 ORDER BY 1`, prefix)
	require.NoError(t, err)
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

// run's and elect's member is named by the command, the host and the
// process id, and its row is deleted when the command ends: a run leaves
// no row behind (the library's members keep theirs for the retention).
func TestCLIMemberNamedAndForgotten(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	require.NoError(t, err)
	prefix := testPrefix(t)
	dir := t.TempDir()
	started, stop := filepath.Join(dir, "started"), filepath.Join(dir, "stop")
	p := startCLI(t, false, "run", "--prefix", prefix, "--lock", "job", "--",
		"sh", "-c", `echo ok > "$0"; while [ ! -e "$1" ]; do sleep 0.05; done`, started, stop)
	waitForFile(t, p, started)
	want := fmt.Sprintf("%srun-%s-%d", prefix, host, p.cmd.Process.Pid)
	require.Equal(t, []string{want}, memberRows(t, prefix))
	r := runCLI(t, "locks", "--json")
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, `"member_id": "`+want+`"`, "locks names the process")
	require.NoError(t, os.WriteFile(stop, nil, 0o600))
	require.Equal(t, exitOK, p.wait(t, 30*time.Second).code)
	require.Empty(t, memberRows(t, prefix), "the row goes when run ends")

	// elect: the value defaults to the agent id.
	valueFile := filepath.Join(dir, "value")
	p = startCLI(t, false, "elect", "job", "--prefix", prefix, "--", "sh", "-c", `echo "$PGCOORD_LEADER_VALUE" > "$0"`, valueFile)
	r = p.wait(t, 30*time.Second)
	require.Equal(t, exitOK, r.code)
	require.Equal(t, "elect-"+host+"-"+strconv.Itoa(p.cmd.Process.Pid), strings.TrimSpace(readFile(t, valueFile)))
	require.Empty(t, memberRows(t, prefix), "the row goes when elect ends")

	// --agent-id still names it; a member of the library keeps its row.
	r = runCLI(t, "run", "--prefix", prefix, "--lock", "job", "--agent-id", "mine", "--", "true")
	require.Equal(t, exitOK, r.code)
	require.Empty(t, memberRows(t, prefix))
	c := newCoord(t, prefix, "library")
	require.NoError(t, c.Stop(context.Background()))
	require.Equal(t, []string{prefix + "library"}, memberRows(t, prefix))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
