package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
)

// logEnv names a directory: each child process of a mode writes its
// coordinators' logs there (<mode>-<proc>.log, Info and above), to see
// why a session broke or a wait failed under fleet load. Unset, the
// coordinators log nothing, as a quiet benchmark should.
const logEnv = "FLEET_LOG_DIR"

// childLogger returns the logger of child proc's coordinators and the
// func that closes its file.
func childLogger(mode string, proc int) (*slog.Logger, func()) {
	dir := os.Getenv(logEnv)
	if dir == "" {
		return slog.New(slog.DiscardHandler), func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", mode, proc)))
	if errors.Is(err, fs.ErrNotExist) {
		// A directory named but not made yet (a 30 s run lost its logs
		// to that once): make it.
		if err = os.MkdirAll(dir, 0o755); err == nil {
			f, err = os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", mode, proc)))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "log:", err)
		return slog.New(slog.DiscardHandler), func() {}
	}
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})), func() { f.Close() }
}

// errKind is err's message with what varies between errors of one kind
// (quoted names, numbers) blanked, to count errors by kind.
func errKind(err error) string {
	return kindRE.ReplaceAllString(err.Error(), "…")
}

var kindRE = regexp.MustCompile(`"[^"]*"|[0-9]+(\.[0-9]+)?`)
