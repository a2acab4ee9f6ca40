#!/usr/bin/env bash
# Makes arm64 packages installable on an x86-64 Ubuntu (for libudev-dev:arm64, the board build's
# one target library). Ubuntu serves arm64 from ports.ubuntu.com, not from archive.ubuntu.com or
# security.ubuntu.com, so after `dpkg --add-architecture arm64` a plain `apt-get update` fails
# on 404s. This pins the existing sources to the host's architecture and adds the ports mirror
# for arm64. Debian needs none of it (one mirror serves every architecture); it does nothing
# there. Idempotent. Usage: scripts/ubuntu-arm64-ports.sh [ROOT] (ROOT: default /, for tests).
set -euo pipefail
root=${1:-}
osr="$root/etc/os-release"
[ -r "$osr" ] || exit 0
id=$(. "$osr"; echo "${ID:-}")
codename=$(. "$osr"; echo "${VERSION_CODENAME:-${UBUNTU_CODENAME:-}}")
[ "$id" = ubuntu ] || exit 0
[ -n "$codename" ] || { echo "ubuntu-arm64-ports: no VERSION_CODENAME in $osr" >&2; exit 1; }
host=${HOST_ARCH:-$(dpkg --print-architecture)}
ports="$root/etc/apt/sources.list.d/lapa-arm64-ports.list"
[ -e "$ports" ] && exit 0
# deb822 sources (Ubuntu 24.04 and later): an Architectures field on every stanza without one.
for f in "$root"/etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  awk -v arch="$host" '
    function flush() { if (n) { for (i = 1; i <= n; i++) print buf[i]; if (!has && typed) print "Architectures: " arch; } n = 0; has = 0; typed = 0 }
    /^[[:space:]]*$/ { flush(); print; next }
    { buf[++n] = $0; if ($0 ~ /^Architectures:/) has = 1; if ($0 ~ /^Types:/) typed = 1 }
    END { flush() }
  ' "$f" > "$f.lapa-tmp" && mv "$f.lapa-tmp" "$f"
done
# One-line sources: `deb URL` → `deb [arch=HOST] URL`, `deb [opts] URL` → `deb [arch=HOST opts] URL`
# (lines that already name an arch are left alone).
for f in "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  sed -i -E -e "/^deb(-src)?[[:space:]]+\[[^]]*arch=/b" \
    -e "s/^(deb(-src)?)[[:space:]]+\[/\1 [arch=$host /" \
    -e "s/^(deb(-src)?)[[:space:]]+([a-z]+:)/\1 [arch=$host] \3/" "$f"
done
mkdir -p "$(dirname "$ports")"
{
  echo "# Added by lapa's scripts/ubuntu-arm64-ports.sh: arm64 packages for the board build."
  for suite in "$codename" "$codename-updates" "$codename-security"; do
    echo "deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports $suite main universe"
  done
} > "$ports"
echo "ubuntu-arm64-ports: sources pinned to $host, arm64 from ports.ubuntu.com ($codename)"
