#!/usr/bin/env bash
# tidy-check.sh MODULE_DIR...: `go mod tidy -diff` for the nested modules.
# Each requires the library's release (github.com/pgcoord/pgcoord v0.1.0), as
# users fetch it; go.work replaces that with this tree, but go mod tidy
# ignores go.work (and the proxy has no such version before the tag), so tidy
# runs on a copy of the module's go.mod and go.sum with the same replace, and
# the result, the replace dropped again, must equal the files committed. The
# library's own go.sum lines are left out of the comparison: a replaced module
# has none, and a released nested module records the tag's (docs/releasing.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
for m in "$@"; do
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp "$root/$m/go.mod" "$tmp/go.mod"
  cp "$root/$m/go.sum" "$tmp/go.sum"
  (
    cd "$root/$m"
    export GOWORK=off
    $GO mod edit -modfile="$tmp/go.mod" -replace "github.com/pgcoord/pgcoord=$root"
    $GO mod tidy -modfile="$tmp/go.mod"
    $GO mod edit -modfile="$tmp/go.mod" -dropreplace github.com/pgcoord/pgcoord
  )
  sums() { grep -v '^github.com/pgcoord/pgcoord ' "$1" || true; }
  if ! diff -u "$root/$m/go.mod" "$tmp/go.mod" || ! diff -u <(sums "$root/$m/go.sum") <(sums "$tmp/go.sum"); then
    echo "$m: go.mod or go.sum is not tidy: tidy it with the replace above, then drop the replace" >&2
    exit 1
  fi
  rm -rf "$tmp"
done
