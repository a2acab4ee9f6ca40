#!/usr/bin/env bash
# Checks scripts/ubuntu-arm64-ports.sh on a fake Ubuntu root (both source formats), and that it
# leaves a Debian root alone.
set -euo pipefail
cd "$(dirname "$0")/.."
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/u/etc/apt/sources.list.d" "$t/d/etc/apt"
printf 'ID=ubuntu\nVERSION_CODENAME=noble\n' > "$t/u/etc/os-release"
printf 'Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: noble noble-updates\nComponents: main universe\n\nTypes: deb\nURIs: http://security.ubuntu.com/ubuntu/\nSuites: noble-security\nComponents: main\nArchitectures: amd64\n' \
  > "$t/u/etc/apt/sources.list.d/ubuntu.sources"
printf 'deb http://archive.ubuntu.com/ubuntu noble main\ndeb [signed-by=/k] http://y noble main\ndeb [arch=amd64,i386] http://z noble main\n' > "$t/u/etc/apt/sources.list"
HOST_ARCH=amd64 scripts/ubuntu-arm64-ports.sh "$t/u" >/dev/null
HOST_ARCH=amd64 scripts/ubuntu-arm64-ports.sh "$t/u" >/dev/null # idempotent
fail() { echo "test-ubuntu-ports: $*" >&2; exit 1; }
[ "$(grep -c '^Architectures: amd64$' "$t/u/etc/apt/sources.list.d/ubuntu.sources")" = 2 ] || fail "deb822 stanzas not pinned"
grep -qx 'deb \[arch=amd64\] http://archive.ubuntu.com/ubuntu noble main' "$t/u/etc/apt/sources.list" || fail "plain line not pinned"
grep -qx 'deb \[arch=amd64 signed-by=/k\] http://y noble main' "$t/u/etc/apt/sources.list" || fail "line with options not pinned"
grep -qx 'deb \[arch=amd64,i386\] http://z noble main' "$t/u/etc/apt/sources.list" || fail "a line naming its arch was changed"
[ "$(grep -c '^deb \[arch=arm64\] http://ports.ubuntu.com/ubuntu-ports noble' "$t/u/etc/apt/sources.list.d/lapa-arm64-ports.list")" = 3 ] || fail "ports list"
printf 'ID=debian\nVERSION_CODENAME=bookworm\n' > "$t/d/etc/os-release"
printf 'deb http://deb.debian.org/debian bookworm main\n' > "$t/d/etc/apt/sources.list"
HOST_ARCH=amd64 scripts/ubuntu-arm64-ports.sh "$t/d"
grep -qx 'deb http://deb.debian.org/debian bookworm main' "$t/d/etc/apt/sources.list" || fail "Debian sources were changed"
[ ! -e "$t/d/etc/apt/sources.list.d" ] || fail "Debian got a ports list"
echo "test-ubuntu-ports: ok"
