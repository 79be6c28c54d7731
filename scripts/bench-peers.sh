#!/usr/bin/env bash
# Compares pgcoord with raw pgx (the floor), etcd, Redis (redsync) and a
# tooz-style baseline on this machine and prints a markdown table of medians
# (bench/, a module of its own so that the peers' clients stay out of the
# library's go.mod). Arguments go to the benchmark: -rounds N (default 3),
# -duration D (default 2s), -trials N, -only REGEXP; -h lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-redis.sh
cd bench
exec go run . "$@"
