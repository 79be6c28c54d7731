package pgtemp

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverCredential returns the user to run PostgreSQL as: nil (ourselves)
// unless we are root, which postgres refuses to run as; then the "postgres"
// OS user that the Debian packages create.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtemp: running as root, which PostgreSQL refuses, and there is no OS user \"postgres\" to run it as (install postgresql-15, which creates it, or `useradd --system postgres`): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtemp: OS user postgres has non-numeric uid %q / gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// makeTempRoot creates DIR, DIR/data and DIR/sock, owned by the server user.
func makeTempRoot(cred *syscall.Credential) (string, error) {
	base := filepath.Clean(os.TempDir())
	// The server user must be able to traverse every parent of the data dir
	// (root's TMPDIR may be under /root), and the Unix socket path must fit
	// in sun_path (~107 bytes).
	if (cred != nil && !traversableByAll(base)) || len(base) > 60 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgcoord-pg-*")
	if err != nil {
		return "", fmt.Errorf("pgtemp: create temp dir: %w", err)
	}
	dir = filepath.Clean(dir)
	for _, d := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "sock")} {
		// initdb insists on a 0700 (or 0750) data dir owned by the server user.
		if d != dir {
			if err := os.Mkdir(d, 0o700); err != nil {
				_ = os.RemoveAll(dir)
				return "", fmt.Errorf("pgtemp: %w", err)
			}
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				_ = os.RemoveAll(dir)
				return "", fmt.Errorf("pgtemp: chown %s to postgres: %w", d, err)
			}
		}
	}
	return dir, nil
}

// traversableByAll reports whether every directory from p up to / has the
// "other" execute bit, so an unrelated user can reach p.
func traversableByAll(p string) bool {
	p, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(p)
		if parent == p {
			return true
		}
		p = parent
	}
}
