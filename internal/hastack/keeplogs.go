package hastack

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LogsEnv names a directory where Close keeps a copy of the stack's logs
// (each node's Patroni log, PostgreSQL's logs, etcd's and HAProxy's)
// before it removes the stack's directory: a node that fails to rejoin is
// explained by its Patroni log, which would otherwise go with the stack.
// make ha sets it (HA_LOGS, default /tmp/pgcoord-ha-logs).
const LogsEnv = "PGCOORD_HA_LOGS"

// keepLogs copies the stack's logs to $PGCOORD_HA_LOGS/<the stack's
// directory name>/, keeping their paths relative to the stack's
// directory, and returns where, "" when LogsEnv is not set.
func (s *Stack) keepLogs() (string, error) {
	root := os.Getenv(LogsEnv)
	if root == "" {
		return "", nil
	}
	dst := filepath.Join(root, filepath.Base(s.dir))
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !isLog(path) {
			return nil // a file that vanished meanwhile is no reason to stop
		}
		rel, err := filepath.Rel(s.dir, path)
		if err != nil {
			return err
		}
		return copyFile(path, filepath.Join(dst, rel))
	})
	if err != nil {
		return dst, fmt.Errorf("hastack: keeping the logs in %s: %w", dst, err)
	}
	return dst, nil
}

// isLog reports whether path is a log (or a config worth reading beside
// one): *.log, Patroni's configs, and what PostgreSQL's logging collector
// writes under a data directory's log/.
func isLog(path string) bool {
	base := filepath.Base(path)
	return strings.HasSuffix(base, ".log") || strings.HasSuffix(base, ".yml") || strings.HasSuffix(base, ".cfg") ||
		filepath.Base(filepath.Dir(path)) == "log"
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return nil //nolint:nilerr // gone meanwhile
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
