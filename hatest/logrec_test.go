package hatest

import (
	"context"
	"fmt"
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

// around describes the records from from to to, times relative to zero.
func (r *logRecorder) around(from, to, zero time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		if rec.Time.Before(from) || rec.Time.After(to) {
			continue
		}
		var attrs []string
		rec.Attrs(func(a slog.Attr) bool {
			v := a.Value.String()
			if len(v) > 160 {
				v = v[:160] + "..."
			}
			attrs = append(attrs, a.Key+"="+v)
			return true
		})
		out = append(out, fmt.Sprintf("%s %s %s", ms(rec.Time.Sub(zero)), rec.Message, strings.Join(attrs, " ")))
	}
	return out
}
