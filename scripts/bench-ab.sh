#!/usr/bin/env bash
# Compares two revisions on the root package's benchmarks, interleaved:
#
#   scripts/bench-ab.sh BEFORE [AFTER] 
#
# builds the test binary of each revision (AFTER defaults to the work tree)
# and runs BENCH (a -test.bench regexp; default the handoff benchmarks)
# ROUNDS times (default 5), one revision after the other within a round, each
# against its own throwaway PostgreSQL. It prints ns/op per round and the
# medians: on a shared, noisy machine, compare within a round.
set -euo pipefail
# The library alone, with the versions its go.mod gives users (see ROOT_GO in
# the Makefile): not go.work's, which the nested modules raise.
export GOWORK=off
cd "$(dirname "$0")/.."
before=${1:?usage: scripts/bench-ab.sh BEFORE [AFTER]}
after=${2:-}
rounds=${ROUNDS:-5}
benchtime=${BENCHTIME:-1s}
bench=${BENCH:-'^Benchmark(Contended|ContendedBeyondBudget|RawHandoff)$'}
dir=$(mktemp -d)
trap 'git worktree remove --force "$dir/before" >/dev/null 2>&1 || true; [ -z "$after" ] || git worktree remove --force "$dir/after" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
git worktree add --detach "$dir/before" "$before" >/dev/null 2>&1
(cd "$dir/before" && go test -c -o "$dir/before.test" .)
if [ -n "$after" ]; then
  git worktree add --detach "$dir/after" "$after" >/dev/null 2>&1
  (cd "$dir/after" && go test -c -o "$dir/after.test" .)
else
  go test -c -o "$dir/after.test" .
fi
echo "bench-ab: $before vs ${after:-work tree}, $rounds rounds of $benchtime, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for v in before after; do
    "$dir/$v.test" -test.run='^$' -test.bench="$bench" -test.benchtime="$benchtime" |
      awk -v v="$v" -v r="$r" '/^Benchmark/ { sub(/-[0-9]+$/, "", $1); print r, v, substr($1, 10), $3 }'
  done
done | tee "$dir/raw" | awk '{ printf "round %s %-6s %-28s %12s ns/op\n", $1, $2, $3, $4 }'
awk '
  { v[$2 " " $3, ++n[$2 " " $3]] = $4 }
  END {
    for (k in n) {
      m = n[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      med = m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
      printf "median %-34s %12d ns/op\n", k, med
    }
  }' "$dir/raw" | sort -k3,3 -k2,2
