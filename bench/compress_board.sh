#!/usr/bin/env bash
# The bundles of bench/compress_success.sh (f32, int8 dynamic and static, int4 weights of the `small`
# teacher) in the board binary: `lapa-edge run --sim --bundle B` at 50 Hz for 30 s with one
# inference thread, under /usr/bin/time -v — peak resident memory of the whole process (sim,
# renderer, policy, MiniLM) and the loop's inference latency p50/p99 beside the servo loop. With
# EDGE_AARCH64 (the aarch64 lapa-edge, e.g. from scripts/cross-check.sh) each bundle also drives
# 10 s under qemu-aarch64: a functional check of the Arm build on the real weights (emulated
# timings say nothing about a board, so they are written down as such, never as speed).
#
#   EDGE=target/release/lapa-edge bash bench/compress_board.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EDGE="${EDGE:-target/release/lapa-edge}"
OUT=results/compress/success
mkdir -p "$OUT/board"
for name in f32 int8-dynamic int8-static int4; do
  b="$OUT/bundles/$name"
  [ -f "$b/manifest.json" ] || { echo "compress_board: $b is missing; run bench/compress_success.sh first"; exit 1; }
  if [ ! -f "$OUT/board/$name.json" ]; then
    cmd=("$EDGE" run --sim --seed 3 --bundle "$b" --allow-unsigned --rate 50 --threads 1 --max-seconds 30 --settle-seconds 0 --quiet
      --summary-json "$OUT/board/$name.json.tmp")
    echo "/usr/bin/time -v ${cmd[*]}" | tee -a "$OUT/commands.txt"
    /usr/bin/time -v -o "$OUT/board/$name.time" "${cmd[@]}" > /dev/null 2>&1
    mv "$OUT/board/$name.json.tmp" "$OUT/board/$name.json"
  fi
  if [ -n "${EDGE_AARCH64:-}" ] && [ ! -f "$OUT/board/$name-qemu.json" ]; then
    cmd=(qemu-aarch64 -L / "$EDGE_AARCH64" run --sim --seed 3 --bundle "$b" --allow-unsigned --threads 1 --max-seconds 10 --settle-seconds 0
      --quiet --summary-json "$OUT/board/$name-qemu.json.tmp")
    echo "${cmd[*]}" | tee -a "$OUT/commands.txt"
    "${cmd[@]}" > /dev/null 2>&1
    mv "$OUT/board/$name-qemu.json.tmp" "$OUT/board/$name-qemu.json"
  fi
done
python3 - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
rows = ["| bundle | on disk | peak resident memory | inference p50 / p99 (x86-64, 50 Hz loop) | dropped ticks | under qemu-aarch64 (functional only) |", "|---|---|---|---|---|---|"]
table = []
for name in ["f32", "int8-dynamic", "int8-static", "int4"]:
    s = json.load(open(f"{out}/board/{name}.json"))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{out}/board/{name}.time").read()).group(1))
    root = f"{out}/bundles/{name}"
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    q = json.load(open(f"{out}/board/{name}-qemu.json")) if os.path.exists(f"{out}/board/{name}-qemu.json") else None
    qtext = f"{q['chunks']} chunks, {q['policy_errors']} errors (emulated step p50 / p99 {q['inference_p50_ms']:.0f} / {q['inference_p99_ms']:.0f} ms)" if q else "not run"
    rows.append(f"| {name} | {size / 1e6:.1f} MB | {rss / 1024:.0f} MiB | {s['inference_p50_ms']:.2f} / {s['inference_p99_ms']:.2f} ms | {s['dropped_ticks']} | {qtext} |")
    table.append({"bundle": name, "bundle_bytes": size, "peak_rss_bytes": rss * 1024, "loop_50hz": s, "qemu_aarch64": q})
open(f"{out}/board.md", "w").write("\n".join(rows) + "\n")
json.dump(table, open(f"{out}/board.json", "w"), indent=2)
print("\n".join(rows))
PY
