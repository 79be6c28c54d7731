package pgcoord

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestElectionValueServerCannotTakeRefused: a value PostgreSQL's text
// cannot store (a NUL, bytes that are not UTF-8) came back from Campaign as
// the server's untyped error, and only after Campaign had won the lock and
// made the term's grace wait; one over MaxElectionValueLen went on the
// control session that carries the member's liveness. Each is
// ErrInvalidValue, before any I/O: no term begins, and a leader's
// Proclaim keeps its term and its value.
func TestElectionValueServerCannotTakeRefused(t *testing.T) {
	t.Parallel()
	p := testPrefix(t)
	c, o := newCoord(t, p), newCoord(t, p)
	e, seen := c.Election("v"), o.Election("v")
	bad := map[string]string{
		"NUL":       "a\x00b",
		"not UTF-8": "caf\xe9",
		"too long":  strings.Repeat("x", MaxElectionValueLen+1),
	}
	for what, v := range bad {
		require.ErrorIs(t, e.Campaign(ctx(t), v), ErrInvalidValue, what)
		require.False(t, e.IsLeader(), what)
		_, err := seen.Leader(ctx(t))
		require.ErrorIs(t, err, ErrNoLeader, "%s: no term began", what)
		require.ErrorIs(t, e.Proclaim(ctx(t), v), ErrInvalidValue, "%s: input is checked first", what)
	}

	longest := strings.Repeat("é", MaxElectionValueLen/2) // 2 bytes each
	require.NoError(t, e.Campaign(ctx(t), longest))
	got, err := seen.Leader(ctx(t))
	require.NoError(t, err)
	require.Equal(t, longest, got.Value)
	require.NoError(t, e.Proclaim(ctx(t), "short"))
	token := e.Token()
	for what, v := range bad {
		require.ErrorIs(t, e.Proclaim(ctx(t), v), ErrInvalidValue, what)
		require.ErrorIs(t, e.Campaign(ctx(t), v), ErrInvalidValue, "%s: Campaign of a leader", what)
		require.True(t, e.IsLeader(), what)
		require.Equal(t, token, e.Token(), what)
		got, err := seen.Leader(ctx(t))
		require.NoError(t, err)
		require.Equal(t, "short", got.Value, what)
	}
	require.NoError(t, e.Resign(ctx(t)))
}
