package pgtemp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// findBinDir picks the directory holding initdb and postgres, in the order
// documented on Options.BinDir.
func findBinDir(explicit string) (string, error) {
	const advice = "install postgresql-15 (apt-get install postgresql-15) or set " + BinDirEnv + " to the directory holding initdb and postgres"
	if explicit != "" {
		if hasServerBinaries(explicit) {
			return explicit, nil
		}
		return "", fmt.Errorf("%w in Options.BinDir %s: %s", ErrNoBinaries, explicit, advice)
	}
	if d := os.Getenv(BinDirEnv); d != "" {
		if hasServerBinaries(d) {
			return d, nil
		}
		return "", fmt.Errorf("%w in $%s=%s: %s", ErrNoBinaries, BinDirEnv, d, advice)
	}
	tried := []string{"/usr/lib/postgresql/*/bin"}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	for _, d := range dirs {
		if hasServerBinaries(d) {
			return d, nil
		}
	}
	tried = append(tried, "pg_config --bindir")
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			if d := strings.TrimSpace(string(out)); d != "" && hasServerBinaries(d) {
				return d, nil
			}
		}
	}
	tried = append(tried, "PATH")
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(initdb); hasServerBinaries(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w (looked in %s): %s", ErrNoBinaries, strings.Join(tried, ", "), advice)
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionLess compares dotted versions numerically ("9.6" < "15"), falling
// back to string order for anything else.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if errX != nil || errY != nil {
			if as[i] != bs[i] {
				return as[i] < bs[i]
			}
			continue
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
