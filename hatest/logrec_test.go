package hatest

import (
	"context"
	"log/slog"
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

// event is a line of a case's timeline.
type event struct {
	at   time.Time
	what string
}

// events are the records from from to to, as timeline lines.
func (r *logRecorder) events(from, to time.Time) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, rec := range r.recs {
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
		out = append(out, event{at: rec.Time, what: strings.TrimSpace("log: " + rec.Message + " " + strings.Join(attrs, " "))})
	}
	return out
}
