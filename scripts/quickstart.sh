#!/usr/bin/env bash
# The main job end to end on the embedded defaults (sim data, tiny config). Installs ffmpeg if it
# is missing (Debian/Ubuntu), then runs `lapa quickstart` (outputs in out/quickstart/, or --out),
# which ends with a signed bundle, and runs that bundle on the simulated board with `lapa-edge`,
# verifying its signature with the quickstart's public key.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi
out=out/quickstart
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --out) out="${args[i + 1]:-$out}" ;;
    --out=*) out="${args[i]#--out=}" ;;
    -h | --help) exec cargo run --release --locked --bin lapa -- quickstart --help ;;
  esac
done
cargo run --release --locked --bin lapa -- quickstart "$@"
echo "[board] lapa-edge run --sim on the signed bundle (10 s, simulated SO-101)"
cargo run --release --locked --bin lapa-edge -- run --sim --bundle "$out/bundle" \
  --public-key "$out/keys/quickstart.pub" --max-seconds 10
