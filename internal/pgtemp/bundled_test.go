package pgtemp

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A server package with its own libraries beside bin/ (the npm ones) gets
// its lib/ first on LD_LIBRARY_PATH; a distribution's bin dir, whose lib/
// holds server modules only, leaves the environment alone.
func TestBundledLibDir(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"npm/bin", "npm/lib", "debian/bin", "debian/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"npm/lib/libicuuc.so.60.2", "debian/lib/plpgsql.so"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lib := bundledLibDir(filepath.Join(root, "npm/bin"))
	if lib != filepath.Join(root, "npm/lib") {
		t.Fatalf("bundledLibDir(npm) = %q", lib)
	}
	if d := bundledLibDir(filepath.Join(root, "debian/bin")); d != "" {
		t.Fatalf("bundledLibDir(debian) = %q, want none", d)
	}
	env := withLibraryPath([]string{"A=1", "LD_LIBRARY_PATH=/x"}, lib)
	if !slices.Equal(env, []string{"A=1", "LD_LIBRARY_PATH=" + lib + ":/x"}) {
		t.Fatalf("withLibraryPath: %q", env)
	}
	if env := withLibraryPath([]string{"A=1"}, ""); !slices.Equal(env, []string{"A=1"}) {
		t.Fatalf("withLibraryPath without a lib: %q", env)
	}
}
