#!/usr/bin/env bash
# Installs what `make ha` needs: Debian's etcd-server (3.4), patroni (3.0)
# and haproxy (2.6) beside postgresql-15. The HA tests start their own etcd,
# Patroni nodes and HAProxy on loopback ports in temporary directories, so
# the system services these packages start and enable are stopped and
# disabled again (an etcd or HAProxy on its default port would only be in
# the way). Idempotent: a second run installs nothing and changes nothing.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v patroni >/dev/null 2>&1 || need+=(patroni)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
# Patroni's etcd v3 client (patroni[etcd3]) comes with the patroni package
# as python3-etcd; psycopg2 as python3-psycopg2 (a dependency).

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need[*]}: install them (apt-get install ${need[*]}) or run this script as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101 keeps dpkg from starting the services at all where
  # invoke-rc.d honours it; they are stopped below in any case.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  trap 'if [ -n "$made_policy" ]; then rm -f "$policy"; fi' EXIT
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Stop and disable the packaged services (no-ops when they are not running
# or when there is no init system, as in a container).
for svc in etcd haproxy patroni postgresql; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done
# The postgresql package's own cluster (15/main), if one was created and is
# running, is not ours to keep running either.
if command -v pg_ctlcluster >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q ' online'; then
  pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r v c; do
    pg_ctlcluster "$v" "$c" stop >/dev/null 2>&1 || true
  done
fi

for tool in etcd etcdctl patroni patronictl haproxy; do
  command -v "$tool" >/dev/null || { echo "install-ha: $tool still missing" >&2; exit 1; }
done
