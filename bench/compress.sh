#!/usr/bin/env bash
# The compression table, results/compress/: on one machine, in one run, the `small` policy (fresh
# random weights, gains and offsets moved off 1 and 0) as
#   - lapa f32 on burn, and on lapa-compress's engine (f32, int8 dynamic, int8 static calibrated
#     min-max on simulator frames), and its ONNX export on rten (f32, int8): `lapa bench compress`;
#   - the same ONNX files on ONNX Runtime (bench/onnx_ort.py), when $PYTHON has onnxruntime:
#       python3 -m venv ~/.cache/ortvenv && ~/.cache/ortvenv/bin/pip install onnxruntime numpy
#       PYTHON=~/.cache/ortvenv/bin/python bench/compress.sh
# at 1 and 2 threads. Writes results/compress/{table.md,table.json,raw/}. STEPS and ROUNDS set the
# work (default 100 × 3).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-100}"
ROUNDS="${ROUNDS:-3}"
PYTHON="${PYTHON:-$HOME/.cache/ortvenv/bin/python}"
out=results/compress
raw="$out/raw"
mkdir -p "$raw"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --release --locked --bin lapa >&2
lapa="${CARGO_TARGET_DIR:-target}/release/lapa"
for t in 1 2; do
  "$lapa" bench compress --config small --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" \
    --onnx-dir "$work/onnx-$t" --json "$raw/lapa-${t}thread.json" | tee "$raw/lapa-${t}thread.txt"
  if [ -x "$PYTHON" ] && "$PYTHON" -c "import onnxruntime, numpy" 2>/dev/null; then
    "$PYTHON" bench/onnx_ort.py --dir "$work/onnx-$t" --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" \
      --json "$raw/ort-${t}thread.json" | tee "$raw/ort-${t}thread.txt"
  else
    echo "bench/compress.sh: no onnxruntime at $PYTHON; the ONNX Runtime rows are left out (see the header)" >&2
  fi
done
python3 - "$out" <<'PY'
import json, os, platform, sys, datetime
out = sys.argv[1]; raw = f"{out}/raw"
def j(n):
    p = f"{raw}/{n}.json"
    return json.load(open(p)) if os.path.exists(p) else None
rows, md = [], []
l1, l2 = j("lapa-1thread"), j("lapa-2thread")
o1, o2 = j("ort-1thread"), j("ort-2thread")
by2 = {v["variant"]: v for v in l2["variants"]}
oby2 = {v["variant"]: v for v in (o2 or {}).get("variants", [])}
base = l1["variants"][0]["p50_ms"]
f = lambda x: "–" if x is None else f"{x:.2f}"
md.append(f"# Compressed policies — `bench/compress.sh`\n")
md.append(f"Machine: {os.cpu_count()} cores, {platform.machine()}, release build; {datetime.date.today()}. One run; raw outputs in [`raw/`](raw/).")
md.append(f"Policy: `{l1['policy']}`, {l1['parameters']:,} parameters (the frozen MiniLM encoder not counted), {l1['mflop_per_step']:.1f} MFLOP per step;")
md.append("fresh random weights with gains and offsets moved off 1 and 0 (speed does not depend on the values; the divergence would be different on trained weights).")
md.append(f"int8 kernel picked by rten-gemm here: `{l1['int8_kernel']}`. Static ranges: min-max over {l1['calib_frames']} simulator frames; divergence on {l1['eval_frames']} other frames.\n")
md.append("| variant | p50, 1 thread | p99, 1 thread | p50, 2 threads | speed-up over burn f32 (1 thread; higher is faster) | weights in memory | KL from f32 (nats) | same bin as f32 |")
md.append("|---|---|---|---|---|---|---|---|")
for v in l1["variants"]:
    w = by2.get(v["variant"], {})
    wb = "–" if v["weight_bytes"] is None else "%.2f MB" % (v["weight_bytes"] / 1e6)
    kl = "–" if v["kl_vs_f32_nats"] is None else "%.1e" % v["kl_vs_f32_nats"]
    sb = "–" if v["same_bin_vs_f32"] is None else "%.1f%%" % (100 * v["same_bin_vs_f32"])
    md.append(f"| {v['variant']} | {f(v['p50_ms'])} ms | {f(v['p99_ms'])} ms | {f(w.get('p50_ms'))} ms | {base / v['p50_ms']:.2f}× | {wb} | {kl} | {sb} |")
    rows.append({**v, "p50_ms_2_threads": w.get("p50_ms"), "p99_ms_2_threads": w.get("p99_ms")})
if o1:
    for v in o1["variants"]:
        w = oby2.get(v["variant"], {})
        md.append(f"| {v['variant']} ({o1['runtime']}) | {f(v['p50_ms'])} ms | {f(v['p99_ms'])} ms | {f(w.get('p50_ms'))} ms | {base / v['p50_ms']:.2f}× | – | – | – |")
        rows.append({**v, "runtime": o1["runtime"], "threads": 1, "p50_ms_2_threads": w.get("p50_ms"), "p99_ms_2_threads": w.get("p99_ms")})
md.append("")
md.append("p50 is the median of the rounds' medians (the variants take turns in each round); p99 pools every timed step. A step is one camera")
md.append("frame (64×64) to a decoded action chunk, the instruction's embedding cached as at run time. rten and ONNX Runtime run the ONNX")
md.append("export of these same weights (`lapa export --onnx`); their steps start from the uint8 image too, so they are comparable.")
md.append("The ONNX Runtime rows come from a second process run right after `lapa bench compress` (not interleaved with it); their")
md.append("speed-up is against that run's burn figure.")
json.dump({"machine": {"cores": os.cpu_count(), "arch": platform.machine()}, "policy": l1["policy"], "parameters": l1["parameters"],
           "onnx_bytes": l1["onnx_bytes"], "int8_kernel": l1["int8_kernel"], "variants": rows}, open(f"{out}/table.json", "w"), indent=2)
open(f"{out}/table.md", "w").write("\n".join(md) + "\n")
print(f"wrote {out}/table.md and {out}/table.json")
PY
