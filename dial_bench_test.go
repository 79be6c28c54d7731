package pgcoord

import (
	"context"
	"testing"
)

// BenchmarkSessionDial is one lock session's connect, as a reconnect runs
// it: the connection, the statements that prepare the session (its backend
// pid, the server checks, the idle bound), then a close. It is on the hot
// path of every recovery, so checks added to it must not slow it down.
func BenchmarkSessionDial(b *testing.B) {
	c := newCoord(b, testPrefix(b))
	s := newSession(c, sessionLock)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.connect(ctx); err != nil {
			b.Fatal(err)
		}
		_ = s.lock(ctx)
		_ = s.conn.Close(ctx)
		s.conn = nil
		s.unlock()
	}
}
