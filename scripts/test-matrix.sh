#!/usr/bin/env bash
# make test-matrix: the whole suite (go test -race ./... of the root module,
# then the chaostest module's short run) against each supported PostgreSQL
# major version, one after another (each run is CPU-heavy), with a summary
# line per version at the end.
#
#   PG_VERSIONS="14 15 16 17 18" scripts/test-matrix.sh
#
# 15 is Debian's postgresql-15 (the default of make test); the others come
# from scripts/install-pg-versions.sh (installed first, if missing) and are
# chosen with PGCOORD_PG_BINDIR, which every throwaway server of the suite
# (internal/pgtemp), child processes included, then uses. Each version's
# output goes to $MATRIX_LOG_DIR/pgVERSION.log (default /tmp/pgcoord-matrix).
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
versions=(${PG_VERSIONS:-14 15 16 17 18})
logdir=${MATRIX_LOG_DIR:-/tmp/pgcoord-matrix}
mkdir -p "$logdir"

npm_versions=()
for v in "${versions[@]}"; do
  [ "$v" = 15 ] || npm_versions+=("$v")
done
if [ ${#npm_versions[@]} -gt 0 ]; then
  scripts/install-pg-versions.sh "${npm_versions[@]}" || exit 1
fi

summary=()
failed=0
for v in "${versions[@]}"; do
  if [ "$v" = 15 ]; then
    bindir=/usr/lib/postgresql/15/bin
  else
    bindir=$(scripts/install-pg-versions.sh --dir "$v")
  fi
  server=$("$bindir/postgres" --version | awk '{print $3}')
  log=$logdir/pg$v.log
  echo "== PostgreSQL $server ($bindir): log in $log"
  began=$SECONDS
  {
    echo "== PGCOORD_PG_BINDIR=$bindir ($("$bindir/postgres" --version))"
    GOWORK=off PGCOORD_PG_BINDIR=$bindir $GO test -race -count=1 -timeout 30m ./... &&
      (cd chaostest && PGCOORD_PG_BINDIR=$bindir $GO test -race -count=1 -timeout 20m ./...)
  } >"$log" 2>&1
  rc=$?
  took=$((SECONDS - began))
  dur=$(printf '%dm%02ds' $((took / 60)) $((took % 60)))
  if [ $rc -eq 0 ]; then
    line="PostgreSQL $server: passed ($dur)"
  else
    failed=1
    fails=$(grep -E '^\s*--- FAIL: ' "$log" | awk '{print $3}' | sort -u | head -8 | tr '\n' ' ')
    line="PostgreSQL $server: FAILED ($dur): ${fails:-see $log}"
  fi
  echo "$line"
  summary+=("$line")
done

echo "== test-matrix summary"
printf '%s\n' "${summary[@]}"
exit $failed
