package pgcoord

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Capabilities the server cannot take are refused before they reach the
// control session. A 64 MiB document was sent: its statement outran the
// control session's bound, which closed the connection and with it the
// member lock, so the member dropped out of every group (watchers saw a
// Left it never made) and JoinGroup failed with a bare timeout. A NUL in a
// string encodes as JSON but jsonb refuses it (SQLSTATE 22P05).
func TestCapabilitiesServerCannotTakeRefused(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, w := newCoord(t, p), newCoord(t, p)
	require.NoError(t, c.JoinGroup(ctx(t), "keep", "small"))
	evs, err := w.WatchGroup(ctx(t), "keep")
	require.NoError(t, err)

	huge := json.RawMessage(`"` + strings.Repeat("x", 64<<20) + `"`)
	start := time.Now()
	err = c.JoinGroup(ctx(t), "g", huge)
	took := time.Since(start)
	huge = nil
	var seen []GroupEvent
	for end := time.After(3 * c.cfg.HeartbeatInterval); ; {
		select {
		case ev := <-evs:
			seen = append(seen, ev)
			continue
		case <-end:
		}
		break
	}
	assert.ErrorIs(t, err, ErrInvalidCapabilities, "a 64 MiB JoinGroup, after %v", took)
	assert.Empty(t, seen, "the member never left group keep")

	for _, caps := range []any{map[string]string{"a": "x\x00y"}, json.RawMessage(`{"k\u0000": 1}`)} {
		assert.ErrorIs(t, c.JoinGroup(ctx(t), "g", caps), ErrInvalidCapabilities, "%#v", caps)
		assert.ErrorIs(t, c.UpdateCapabilities(ctx(t), "keep", caps), ErrInvalidCapabilities, "%#v", caps)
	}
	// What looks like one but is not: a backslash, then "u0000".
	require.NoError(t, c.JoinGroup(ctx(t), "g", json.RawMessage(`{"a": "\\u0000"}`)))
	require.NoError(t, c.JoinGroup(ctx(t), "g", strings.Repeat("y", 1000)))
}
