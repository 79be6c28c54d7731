package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	r := startCLI(t, false, "demo").wait(t, 60*time.Second)
	require.Equal(t, exitOK, r.code)
	require.Less(t, r.took, 30*time.Second, "make demo must finish within 30s")
	require.Empty(t, r.stderr)

	out := r.stdout
	for _, heading := range []string{"== 1. ", "== 2. ", "== 3. ", "== 4. ", "== 5. Summary"} {
		require.Contains(t, out, "\n"+heading)
	}
	// Every operation waits, holds and releases in the timeline.
	require.Regexp(t, `\n\+ *\d+ms  agent-[abc]  waits +volume-vol-\d  \w+\n`, out)
	require.Regexp(t, `\n\+ *\d+ms  agent-[abc]  holds +volume-vol-\d  \w+ +waited \d+ms\n`, out)
	// The crash and the takeover.
	require.Regexp(t, `\n\+ *\d+ms  agent-c  killed +volume-vol-2  migrate_volume +SIGKILL to pid \d+`, out)
	takeover := regexp.MustCompile(`\n\+ *\d+ms  agent-a  takes over  volume-vol-2  extend_volume +(\d+)ms after the kill, token \d+ > \d+\n`)
	require.Regexp(t, takeover, out)
	// The election: agent-c leads, agent-b takes over after the kill with a
	// larger term token.
	require.Regexp(t, `\n\+ *\d+ms  agent-c  leads +election scheduler  campaign +term token \d+\n`, out)
	require.Regexp(t, `\n\+ *\d+ms  agent-b  takes over  election scheduler  campaign +\d+ms after the kill, term token \d+ > \d+\n`, out)
	// The killed member left live_members but kept its row, gone stale.
	after := out[strings.Index(out, "== 4. "):]
	require.Regexp(t, `demo/agent-c .* no \(stale\)\n`, after)
	require.NotContains(t, after[:strings.Index(after, "pgcoord.members:")], "demo/agent-c",
		"agent-c must be gone from live_members")
	require.Regexp(t, `agent-c +4 +\d+ +\d+ms +killed while holding volume-vol-2`, out)
}
