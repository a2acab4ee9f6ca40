#!/usr/bin/env bash
# The main job end to end on the embedded defaults (sim data, tiny config). Installs ffmpeg if it
# is missing (Debian/Ubuntu), then runs `lapa quickstart`; outputs go to out/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi
cargo run --release --locked --bin lapa -- quickstart "$@"
