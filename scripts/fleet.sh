#!/usr/bin/env bash
# Fleet benchmark: many coordinators in several processes contending for
# shared names on a server with max_connections=100, against the same work
# done with one dedicated connection per holder or waiter; then 16
# goroutines on 4 coordinators contending for one name (starvation), with
# the default budget and with every wait beyond it. Arguments go to
# `fleet run` (-procs, -coords, -goroutines, -names, -hold, -duration,
# -max-connections, -modes).
set -euo pipefail
cd "$(dirname "$0")/../bench"
bin=$(mktemp -d)/fleet
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./fleet
"$bin" run -duration "${FLEET_DURATION:-30s}" "$@"
echo
"$bin" starvation
"$bin" starvation -max-sessions 2
