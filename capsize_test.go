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
// string encodes as JSON but jsonb refuses it (SQLSTATE 22P05); and jsonb
// writes a number's exponent out in digits.
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
	// 90 bytes that jsonb stores, and every watcher reads, as 1.3 MB.
	assert.ErrorIs(t, c.JoinGroup(ctx(t), "g", json.RawMessage(`[`+strings.Repeat(`1e131071,`, 9)+`1e131071]`)), ErrInvalidCapabilities)
	// What looks like one but is not: a backslash, then "u0000".
	require.NoError(t, c.JoinGroup(ctx(t), "g", json.RawMessage(`{"a": "\\u0000"}`)))
	require.NoError(t, c.JoinGroup(ctx(t), "g", map[string]any{"y": strings.Repeat("y", 1000), "n": []float64{1e21, -2.5e-7, 3}}))
}
