#!/usr/bin/env bash
# Runs the root package's benchmarks ROUNDS times (default 5), each round
# running every benchmark once against a throwaway PostgreSQL, and prints a
# markdown table of medians. Ratios to the raw pgx floor are taken within
# each round, then their median is shown: on a shared, noisy machine load
# drifts between rounds, and a ratio within a round cancels most of it.
set -euo pipefail
# The library alone, with the versions its go.mod gives users (see ROOT_GO in
# the Makefile): not go.work's, which the nested modules raise.
export GOWORK=off
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
benchtime=${BENCHTIME:-1s}
bin=$(mktemp -d)/pgcoord.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" .
raw=$(mktemp)
for r in $(seq "$rounds"); do
  "$bin" -test.run='^$' -test.bench=. -test.benchmem -test.benchtime="$benchtime" |
    awk -v r="$r" '/^Benchmark/ {
      # Values by their unit, not their position: custom metrics (heapB/held)
      # come between ns/op and B/op.
      sub(/-[0-9]+$/, "", $1); ns = bytes = allocs = ""; heap = "-"
      for (i = 3; i < NF; i += 2) {
        if ($(i + 1) == "ns/op") ns = $i
        else if ($(i + 1) == "B/op") bytes = $i
        else if ($(i + 1) == "allocs/op") allocs = $i
        else if ($(i + 1) == "heapB/held") heap = $i
      }
      print r, $1, ns, bytes, allocs, heap
    }' >>"$raw"
done
echo "rounds: $rounds, benchtime: $benchtime, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| benchmark | median ns/op | ops/s | median ratio to raw pgx (speed) | B/op | allocs/op | heap B per held lock |"
echo "|---|---|---|---|---|---|---|"
awk '
  { ns[$2, $1] = $3; bytes[$2] = $4; allocs[$2] = $5; heap[$2] = $6; names[$2] = 1; rounds[$1] = 1 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    floor = "BenchmarkRawTryUnlock"
    for (b in names) {
      n = 0; m = 0
      for (r in rounds) {
        if ((b, r) in ns) { v[++n] = ns[b, r] }
        if ((b, r) in ns && (floor, r) in ns) { q[++m] = ns[floor, r] / ns[b, r] }
      }
      med = median(v, n); rat = median(q, m)
      printf "| %s | %.0f | %.0f | %.2f | %s | %s | %s |\n", substr(b, 10), med, 1e9 / med, rat, bytes[b], allocs[b], heap[b]
    }
  }' "$raw" | sort
rm -f "$raw"
