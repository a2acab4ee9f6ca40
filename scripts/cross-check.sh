#!/usr/bin/env bash
# The board build, checked on an x86-64 machine: builds lapa-edge for aarch64-unknown-linux-gnu
# (Raspberry Pi 5, Jetson) and runs it under qemu-aarch64. It installs what it needs itself:
#   apt: gcc-aarch64-linux-gnu (linker, C cross compiler), libclang-dev (the V4L2 bindings are
#        generated with bindgen), libudev-dev:arm64 (serial port enumeration), qemu-user;
#   rustup: the aarch64-unknown-linux-gnu target.
# Under qemu it runs the crate's unit tests, lapa-compress's kernel and engine tests (the Arm int8
# kernels), a closed-loop `--sim` episode to success, doctor and calibrate on the simulated bus, a
# teleoperated sim episode recorded as a dataset, the replay of a cycle log written by the x86-64
# build (the log format is the same on both), and an int8 bundle exported on x86-64 driving a sim
# episode on the aarch64 int8 kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need+=(libclang-dev)
[ -e /usr/lib/aarch64-linux-gnu/pkgconfig/libudev.pc ] || need+=(libudev-dev:arm64)
# The guest's ld.so and libc under qemu (`-L /`, see scripts/cross-env.sh).
[ -e /lib/ld-linux-aarch64.so.1 ] || need+=(libc6:arm64)
if [ ${#need[@]} -gt 0 ]; then
  echo "cross-check: installing ${need[*]}"
  if printf '%s\n' "${need[@]}" | grep -q ':arm64$'; then
    # Ubuntu serves arm64 from ports.ubuntu.com only (a no-op on Debian).
    $SUDO scripts/ubuntu-arm64-ports.sh
    dpkg --print-foreign-architectures | grep -q arm64 || $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -q "$target" || rustup target add "$target"
# shellcheck source=scripts/cross-env.sh
source scripts/cross-env.sh
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

echo "cross-check: building lapa-edge for $target"
# The `cross` profile (Cargo.toml): dependencies less optimised, no line tables — a faster cold build.
cargo build --locked -p lapa-edge --target "$target" --bin lapa-edge --profile cross
edge="$target_dir/$target/cross/lapa-edge"
# ELF e_machine (bytes 18–19) is 0xb7 for aarch64.
[ "$(od -An -tx1 -j18 -N2 "$edge" | tr -d ' ')" = "b700" ] || { echo "cross-check: $edge is not an aarch64 binary"; exit 1; }
qemu=(qemu-aarch64 -L /)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Can this qemu start a thread? (It cannot when ld.so and libc come from two glibc builds: see
# scripts/cross-env.sh. Say so plainly instead of hanging in the unit tests.)
printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n' > "$work/probe.c"
aarch64-linux-gnu-gcc -o "$work/probe" "$work/probe.c" -lpthread
probe=0
timeout 20 "${qemu[@]}" "$work/probe" || probe=$?
if [ "$probe" != 0 ]; then
  echo "cross-check: a two-thread C program does not run under '${qemu[*]}' (exit code $probe; 124 = it hung)."
  echo "cross-check: check that /lib/ld-linux-aarch64.so.1 and /lib/aarch64-linux-gnu/libc.so.6 come from the same libc6:arm64,"
  echo "cross-check: and that it is not older than the cross toolchain's glibc the binaries link against:"
  dpkg-query -W libc6:arm64 libc6-arm64-cross libc6-dev-arm64-cross 2>&1 | sed 's/^/  /' || true
  exit 1
fi
echo "cross-check: unit tests under qemu-aarch64"
timeout 1500 cargo test --locked -p lapa-edge --target "$target" --profile cross --lib
echo "cross-check: lapa-compress's kernel and engine tests under qemu-aarch64 (rten-gemm's Arm int8 kernels)"
timeout 1500 cargo test --locked -p lapa-compress --target "$target" --profile cross --test engine
echo "cross-check: a --sim episode under qemu-aarch64"
timeout 600 "${qemu[@]}" "$edge" run --sim --seed 1 --family push_to_side --quiet --max-seconds 30 > "$work/run.txt"
cat "$work/run.txt"
grep -q "^task: succeeded at [0-9.]* s (tick [0-9]*)$" "$work/run.txt"
echo "cross-check: doctor, calibrate and a recorded teleop episode on the simulated bus under qemu-aarch64"
timeout 120 "${qemu[@]}" "$edge" --version
timeout 300 "${qemu[@]}" "$edge" doctor --sim > "$work/doctor.txt"
grep -q "^all checks passed$" "$work/doctor.txt"
timeout 300 "${qemu[@]}" "$edge" calibrate --sim --arm-id qemu --out "$work/cal.json" > /dev/null
[ -s "$work/cal.json" ]
timeout 900 "${qemu[@]}" "$edge" teleop --sim --no-pace --episodes 2 --seed 1 --record "$work/demos" > "$work/teleop.txt"
cat "$work/teleop.txt"
grep -q "achieved 2 of 2 tasks" "$work/teleop.txt"
# A log written by the x86-64 build, read back by the aarch64 one.
# (built as the workspace tests build it, so no dependency is rebuilt with other features)
cargo test --workspace --locked -q --no-run
"$target_dir/debug/lapa-edge" run --sim --seed 1 --family push_to_side --quiet --max-seconds 30 --log "$work/x86.cyclelog" > /dev/null
timeout 300 "${qemu[@]}" "$edge" replay "$work/x86.cyclelog" --plot "$work/x86.png" > "$work/replay.txt"
grep -q "^cycles: " "$work/replay.txt"
[ -s "$work/x86.png" ]
# An int8 bundle exported by the x86-64 `lapa`, run by the aarch64 `lapa-edge` on its own int8
# kernels (a functional check: emulated timings say nothing about a board).
"$target_dir/debug/lapa" bench policy --config tiny --steps 1 --bins 32 --save-run "$work/run" > /dev/null
"$target_dir/debug/lapa" export --run "$work/run" --out "$work/int8" --unsigned --int8 dynamic > /dev/null
timeout 600 "${qemu[@]}" "$edge" run --sim --seed 1 --family push_to_side --bundle "$work/int8" --allow-unsigned --max-seconds 5 --quiet > "$work/int8.txt" 2>&1
grep -E "^(policy|inference):" "$work/int8.txt"
grep -q "^policy: int8 .*aarch64" "$work/int8.txt"
grep -q "^inference: [1-9][0-9]* chunks .* 0 errors" "$work/int8.txt"
echo "cross-check: ok"
