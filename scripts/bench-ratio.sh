#!/usr/bin/env bash
# Prints the four hot-path ratios of issue 18 as medians of ROUNDS rounds
# (default 5) of BENCHTIME each (default 2s). A ratio is raw pgx's ns/op over
# pgcoord's (higher is faster; 1.00 is raw speed). Each ratio's two
# benchmarks run back to back in a process of their own, against its own
# throwaway PostgreSQL, and the four pairs take turns within every round. On
# this shared, noisy machine load drifts within minutes (raw ns/op has moved
# by a third between two runs); with all seven benchmarks in one process, a
# pair's two halves ran up to a minute apart, and its ratio carried that
# drift. Back to back, the two halves of a ratio see the same load. Every
# coordinator in these benchmarks uses the default Config except the one
# AsyncRelease row.
#
#   sync     AcquireRelease (NoWait + Release)     vs RawTryUnlock         goal >= 0.97
#   async    AcquireReleaseAsync (AsyncRelease)     vs RawTryUnlock         goal >= 1.75
#   handoff  Contended (two coordinators, Wait)     vs RawHandoff           goal >= 0.85
#   par64    AcquireReleaseParallel (64 goroutines) vs RawTryUnlockParallel goal >= 2.00
#
# The handoff's pair runs a third benchmark, RawHandoffSQL (raw pgx sending
# pgcoord's own WaitLock and Unlock), which splits the handoff's ratio in
# two: what pgcoord's SQL costs (RawHandoff/RawHandoffSQL) and what its
# client costs beyond raw pgx (RawHandoffSQL/Contended; 1.00 is none).
set -euo pipefail
# The library alone, with the versions its go.mod gives users (see ROOT_GO in
# the Makefile): not go.work's, which the nested modules raise.
export GOWORK=off
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
benchtime=${BENCHTIME:-2s}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/pgcoord.test" .
# Each pair: the raw floor, then pgcoord's benchmark, in one process (Go
# runs them in source order whatever the order here); the pair's text is
# its key in the table below.
pairs=(
  'RawTryUnlock|AcquireRelease'
  'RawTryUnlock|AcquireReleaseAsync'
  'RawHandoff|RawHandoffSQL|Contended'
  'RawTryUnlockParallel|AcquireReleaseParallel'
)
for r in $(seq "$rounds"); do
  for p in "${pairs[@]}"; do
    "$dir/pgcoord.test" -test.run='^$' -test.bench="^Benchmark($p)\$" -test.benchmem -test.benchtime="$benchtime" |
      awk -v r="$r" -v p="$p" '/^Benchmark/ {
        sub(/-[0-9]+$/, "", $1); ns = allocs = ""
        for (i = 3; i < NF; i += 2) {
          if ($(i + 1) == "ns/op") ns = $i
          else if ($(i + 1) == "allocs/op") allocs = $i
        }
        print r, p, substr($1, 10), ns, allocs
      }' >>"$dir/raw"
  done
done
echo "bench-ratio: $rounds rounds of $benchtime, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
awk '
  # ns is keyed by round, pair and benchmark: RawTryUnlock runs in two pairs,
  # and each ratio divides the figures of its own pair.
  { ns[$1, $2, $3] = $4; allocs[$3] = $5; rounds[$1] = 1 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  BEGIN {
    split("sync async handoff par64", kind, " ")
    ours["sync"] = "AcquireRelease"; floor["sync"] = "RawTryUnlock"; goal["sync"] = 0.97
    ours["async"] = "AcquireReleaseAsync"; floor["async"] = "RawTryUnlock"; goal["async"] = 1.75
    ours["handoff"] = "Contended"; floor["handoff"] = "RawHandoff"; goal["handoff"] = 0.85
    ours["par64"] = "AcquireReleaseParallel"; floor["par64"] = "RawTryUnlockParallel"; goal["par64"] = 2.00
    # Each kind has its pair as the shell array pairs names it.
    for (k in ours) pair[k] = floor[k] "|" ours[k]
    pair["handoff"] = "RawHandoff|RawHandoffSQL|Contended"
  }
  END {
    printf "%-7s", "round"; for (k = 1; k <= 4; k++) printf " %8s", kind[k]; print ""
    nr = 0; for (r in rounds) nr++
    for (r = 1; r <= nr; r++) {
      printf "%-7s", r
      for (k = 1; k <= 4; k++) {
        x = kind[k]
        p = pair[x]
        if (((r, p, ours[x]) in ns) && ((r, p, floor[x]) in ns) && ns[r, p, ours[x]] > 0) {
          v = ns[r, p, floor[x]] / ns[r, p, ours[x]]; all[x, ++cnt[x]] = v; printf " %8.2f", v
        } else printf " %8s", "-"
      }
      print ""
    }
    printf "%-7s", "median"
    for (k = 1; k <= 4; k++) { x = kind[k]; n = cnt[x]; for (i = 1; i <= n; i++) a[i] = all[x, i]; med[x] = n ? median(a, n) : 0; printf " %8.2f", med[x] }
    print ""
    printf "%-7s", "goal"; for (k = 1; k <= 4; k++) printf " %8s", ">=" sprintf("%.2f", goal[kind[k]]); print ""
    printf "%-7s", "met"; for (k = 1; k <= 4; k++) printf " %8s", (med[kind[k]] >= goal[kind[k]] ? "yes" : "NO"); print ""
    printf "allocs per Acquire+Release: sync %s, async %s, 64 goroutines %s (raw pgx try+unlock: %s), handoff %s (raw pgx lock+unlock: %s)\n",
      allocs["AcquireRelease"], allocs["AcquireReleaseAsync"], allocs["AcquireReleaseParallel"], allocs["RawTryUnlock"],
      allocs["Contended"], allocs["RawHandoff"]
    # The floors themselves move with the load on the machine (the 64-goroutine
    # raw floor, 16 backends on 2 cores, most of all): printed, so that a
    # ratio that moved between runs can be told from a floor that did.
    printf "median ns/op (raw/pgcoord):"
    for (k = 1; k <= 4; k++) {
      x = kind[k]; p = pair[x]
      nf = no = 0
      for (r = 1; r <= nr; r++) {
        if ((r, p, floor[x]) in ns) f[++nf] = ns[r, p, floor[x]]
        if ((r, p, ours[x]) in ns) o[++no] = ns[r, p, ours[x]]
      }
      printf " %s %d/%d", x, nf ? median(f, nf) : 0, no ? median(o, no) : 0
    }
    print ""
    # The handoff split: medians of the two ratios of each round.
    p = pair["handoff"]; n = 0
    for (r = 1; r <= nr; r++) {
      if (((r, p, "RawHandoff") in ns) && ((r, p, "RawHandoffSQL") in ns) && ((r, p, "Contended") in ns)) {
        n++; sq[n] = ns[r, p, "RawHandoff"] / ns[r, p, "RawHandoffSQL"]; cl[n] = ns[r, p, "RawHandoffSQL"] / ns[r, p, "Contended"]
      }
    }
    if (n) printf "handoff split (medians): SQL %.2f (RawHandoff/RawHandoffSQL: raw pgx with the SQL of pgcoord), client %.2f (RawHandoffSQL/Contended)\n", median(sq, n), median(cl, n)
  }' "$dir/raw"
