#!/usr/bin/env bash
# Installs Debian's redis-server for the peer benchmark (bench/) when it is
# missing. The benchmark starts its own server on a free port, so the
# system service this package enables is not needed and is left alone.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "redis-server is missing: install it (apt-get install redis-server) or run this script as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq redis-server >/dev/null
command -v redis-server >/dev/null
