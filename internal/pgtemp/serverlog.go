package pgtemp

import (
	"bytes"
	"io"
	"os"
	"strings"
)

// Log returns the tail (last ~64 KiB) of the server log, for error messages.
// After Close it returns the tail as it was when the server stopped.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.finalLog
	}
	return s.logTail()
}

func (s *Server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailSize {
		if _, err := f.Seek(fi.Size()-logTailSize, io.SeekStart); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, logTailSize))
	if len(b) == logTailSize {
		// Drop the partial first line of a cut log.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

func (s *Server) logSince(off int64) string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, logTailSize))
	return string(b)
}

// tailLines returns the last n lines of s, for compact error messages.
func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
