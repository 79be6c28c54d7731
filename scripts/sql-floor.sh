#!/usr/bin/env bash
# sql-floor.sh: what pgcoord's two hot-path statements cost the server, apart
# from any Go client. pgbench (prepared statements, one client) runs three
# scripts of two statements against a throwaway PostgreSQL, interleaved for
# ROUNDS rounds (default 6) of SECONDS each (default 3):
#   raw    pg_try_advisory_lock, pg_advisory_unlock (raw pgx's statements)
#   token  pgcoord's TryLock (the try and the fencing token's nextval), raw unlock
#   ours   pgcoord's TryLock and Unlock (the unlock also tries the wait marker)
#   piped  the same two in one pipeline (\startpipeline): one round trip, as
#          AsyncRelease sent a release with the next try until 6 December
#   fused  UnlockTry, the release and the next try in one statement, as
#          AsyncRelease sends them now (hotfused.go)
# and prints each round's transactions per second and the median of the
# per-round ratios to raw: ours/raw is the ceiling of bench-ratio's sync
# ratio on this machine, since pgcoord makes exactly these two round trips,
# and fused/raw that of its async ratio. Then the same for a handoff, two
# clients taking turns on the key:
#   raw    pg_advisory_lock, pg_advisory_unlock (BenchmarkRawHandoff's)
#   ours   pgcoord's WaitLock (a wait slice: lock_timeout, the lock, the
#          token) and Unlock
# whose ratio is the ceiling of bench-ratio's handoff ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-6}
secs=${SECONDS_PER_RUN:-3}
bin=${PGCOORD_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
dir=$(mktemp -d)
chmod 755 "$dir"
port=$((20000 + RANDOM % 20000))
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
trap 'as_pg "$bin/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt)
"${psql[@]}" -c "CREATE SCHEMA pgcoord; CREATE SEQUENCE pgcoord.fencing_token" postgres
k=12345
try_raw="SELECT pg_try_advisory_lock($k::bigint);"
unlock_raw="SELECT pg_advisory_unlock($k::bigint);"
# As queries/locks.sql has them (TryLock, Unlock).
try_ours="SELECT (CASE WHEN pg_try_advisory_lock($k::bigint) THEN nextval('pgcoord.fencing_token') ELSE 0 END)::bigint AS token;"
unlock_ours="SELECT (CASE WHEN NOT pg_advisory_unlock($k::bigint) THEN false WHEN pg_try_advisory_xact_lock(($k::bigint >> 32)::integer, $k::bigint::bit(32)::integer) THEN true ELSE (SELECT true FROM pg_notify('pgcoord_free', $k::bigint::text)) END)::boolean AS released;"
printf '%s\n%s\n' "$try_raw" "$unlock_raw" >"$dir/raw.sql"
printf '%s\n%s\n' "$try_ours" "$unlock_raw" >"$dir/token.sql"
printf '%s\n%s\n' "$try_ours" "$unlock_ours" >"$dir/ours.sql"
printf '\\startpipeline\n%s\n%s\n\\endpipeline\n' "$try_ours" "$unlock_ours" >"$dir/piped.sql"
# As queries/locks.sql has it (UnlockTry): each run releases the previous
# run's hold and takes the key again (the first finds nothing to release).
fused="SELECT u.released, (CASE WHEN pg_try_advisory_lock($k::bigint) THEN nextval('pgcoord.fencing_token') ELSE 0 END)::bigint AS token FROM (SELECT (CASE WHEN NOT pg_advisory_unlock($k::bigint) THEN false WHEN pg_try_advisory_xact_lock(($k::bigint >> 32)::integer, $k::bigint::bit(32)::integer) THEN true ELSE (SELECT true FROM pg_notify('pgcoord_free', $k::bigint::text)) END)::boolean AS released OFFSET 0) AS u;"
printf '%s\n' "$fused" >"$dir/fused.sql"
# As queries/locks.sql has it (WaitLock), with wait.go's longest slice.
wait_ours="SELECT (CASE WHEN set_config('lock_timeout', 800::integer || 'ms', true) IS NULL THEN 0 WHEN pg_advisory_lock($k::bigint) IS NULL THEN 0 ELSE nextval('pgcoord.fencing_token') END)::bigint AS token;"
printf '%s\n%s\n' "SELECT pg_advisory_lock($k::bigint);" "$unlock_raw" >"$dir/handoff_raw.sql"
printf '%s\n%s\n' "$wait_ours" "$unlock_ours" >"$dir/handoff_ours.sql"
echo "sql-floor: $rounds rounds of ${secs}s, $($bin/postgres --version), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %9s %9s %9s %9s %9s %9s %8s %9s %9s\n' round raw token ours piped fused token/raw ours/raw piped/raw fused/raw
for r in $(seq "$rounds"); do
  line=()
  for s in raw token ours piped fused; do
    line+=("$("$bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -T "$secs" -f "$dir/$s.sql" postgres 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}')")
  done
  echo "$r ${line[*]}" | awk '{printf "%-6s %9s %9s %9s %9s %9s %9.2f %8.2f %9.2f %9.2f\n", $1, $2, $3, $4, $5, $6, $3 / $2, $4 / $2, $5 / $2, $6 / $2}'
done | tee "$dir/rounds"
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf '%-56s %9.2f %8.2f %9.2f %9.2f\n' median "$(awk '{print $7}' "$dir/rounds" | median)" "$(awk '{print $8}' "$dir/rounds" | median)" "$(awk '{print $9}' "$dir/rounds" | median)" "$(awk '{print $10}' "$dir/rounds" | median)"
printf '\n%-6s %9s %9s %9s\n' handoff raw ours ours/raw
for r in $(seq "$rounds"); do
  line=()
  for s in handoff_raw handoff_ours; do
    line+=("$("$bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c 2 -T "$secs" -f "$dir/$s.sql" postgres 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}')")
  done
  echo "$r ${line[*]}" | awk '{printf "%-6s %9s %9s %9.2f\n", $1, $2, $3, $3 / $2}'
done | tee "$dir/handoff"
printf '%-26s %9.2f\n' median "$(awk '{print $4}' "$dir/handoff" | median)"
