package pgcoord

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDesignNamesEverySourceFile keeps docs/design.md's source layout
// matching the tree: every Go file of the package (tests aside) is named
// in it, and every Go file the page names exists.
func TestDesignNamesEverySourceFile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("docs/design.md")
	require.NoError(t, err)
	doc := string(raw)
	i := strings.Index(doc, "## Source layout")
	require.GreaterOrEqual(t, i, 0, "docs/design.md has no source layout section")
	layout := doc[i:]
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") && !strings.Contains(layout, "`"+f+"`") {
			t.Errorf("docs/design.md's source layout does not name %s", f)
		}
	}
	for _, m := range regexp.MustCompile("`([a-z_]+\\.go)`").FindAllStringSubmatch(doc, -1) {
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("docs/design.md names %s, which is not in the package", m[1])
		}
	}
}
