package hatest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// logRecorder keeps a coordinator's log records with their times, so that
// a case can show what the control session's reconnect did around the new
// leader's promotion (when each attempt ran, and why it failed).
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *logRecorder) handler() slog.Handler { return recHandler{r} }

type recHandler struct{ r *logRecorder }

func (recHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recHandler) Handle(_ context.Context, rec slog.Record) error {
	h.r.mu.Lock()
	h.r.recs = append(h.r.recs, rec.Clone())
	h.r.mu.Unlock()
	return nil
}
func (h recHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recHandler) WithGroup(string) slog.Handler      { return h }

// note adds a record of the test's own (an acquire's refusal, say) to the
// coordinator's, so that the timeline shows both.
func (r *logRecorder) note(at time.Time, msg string, attrs ...slog.Attr) {
	rec := slog.NewRecord(at, slog.LevelInfo, "test: "+msg, 0)
	rec.AddAttrs(attrs...)
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
}

// around describes the records from from to to, times relative to zero.
func (r *logRecorder) around(from, to, zero time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := slices.Clone(r.recs)
	// The test's notes are stamped when their acquire began.
	slices.SortStableFunc(recs, func(a, b slog.Record) int { return a.Time.Compare(b.Time) })
	var out []string
	for _, rec := range recs {
		if rec.Time.Before(from) || rec.Time.After(to) {
			continue
		}
		var attrs []string
		rec.Attrs(func(a slog.Attr) bool {
			v := a.Value.String()
			if len(v) > 320 {
				v = v[:320] + "..."
			}
			attrs = append(attrs, a.Key+"="+v)
			return true
		})
		out = append(out, fmt.Sprintf("%s %s %s", ms(rec.Time.Sub(zero)), rec.Message, strings.Join(attrs, " ")))
	}
	return out
}
