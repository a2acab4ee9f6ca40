#!/usr/bin/env bash
# The edge runtime's figures with the `small` policy, on this machine, in one sitting:
#   1. one policy step (frame -> chunk) in burn, at 1 and 2 threads (`lapa bench policy`);
#   2. the same step in PyTorch-CPU eager on the exact same weights (bench/policy_torch.py,
#      which first checks that its logits match burn's);
#   3. `lapa-edge run --sim` at 50 Hz with that policy as a bundle, inference on one thread
#      beside the servo loop: loop timing, inference latency, peak resident memory;
#   4. the stripped size of the release `lapa-edge` binary.
# Writes results/edge/summary.json and results/edge/small.md (and keeps the raw outputs in
# results/edge/raw/). The policy is the `small` preset with fresh random weights unless
# RUN=DIR names a finetuned run (latency and memory do not depend on the weights' values).
#
# Needs a Python with torch and numpy:
#   python3 -m venv ~/.cache/torchvenv && ~/.cache/torchvenv/bin/pip install torch numpy
#   PYTHON=~/.cache/torchvenv/bin/python bench/edge.sh
# and the MiniLM assets (scripts/fetch-minilm.sh, as for training).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-300}
SECONDS_RUN=${SECONDS_RUN:-30}
REPEATS=${REPEATS:-3}
RUN=${RUN:-}
target="${CARGO_TARGET_DIR:-target}"
"$PYTHON" -c "import torch, numpy" 2>/dev/null || { echo "bench/edge.sh: $PYTHON has no torch/numpy (set PYTHON=, see the header)" >&2; exit 2; }
echo "building release lapa and lapa-edge…" >&2
cargo build --release --locked -p lapa-train -p lapa-edge >&2
lapa="$target/release/lapa"
edge="$target/release/lapa-edge"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=results/edge/raw
mkdir -p "$raw"
if [ -n "$RUN" ]; then policy=(--run "$RUN"); else policy=(--config small); fi

echo "1-2/4 policy step: burn and the PyTorch twin, interleaved, $REPEATS times at 1 thread…" >&2
"$lapa" bench policy "${policy[@]}" --threads 1 --steps 1 --save-run "$work/run" --twin "$work/twin" >&2
for i in $(seq 1 "$REPEATS"); do
  "$lapa" bench policy --run "$work/run" --threads 1 --steps "$STEPS" --json "$raw/burn-1thread-$i.json" | tee "$raw/burn-1thread-$i.txt" >&2
  "$PYTHON" bench/policy_torch.py --twin "$work/twin" --threads 1 --steps "$STEPS" --json "$raw/torch-1thread-$i.json" >&2
done
"$lapa" bench policy --run "$work/run" --threads 2 --steps "$STEPS" --json "$raw/burn-2threads.json" | tee "$raw/burn-2threads.txt" >&2
"$PYTHON" bench/policy_torch.py --twin "$work/twin" --threads 2 --steps "$STEPS" --json "$raw/torch-2threads.json" >&2

echo "3/4 lapa-edge run --sim at 50 Hz beside the policy…" >&2
# Signed with a throwaway key and verified on load, as a board runs it.
"$lapa" keys generate --out "$work/keys/bench" --comment "bench/edge.sh throwaway" >&2
"$lapa" export --run "$work/run" --out "$work/bundle" --name small-bench --sign-key "$work/keys/bench" >&2
/usr/bin/time -v -o "$raw/loop-50hz-small.time" "$edge" run --sim --seed 3 --bundle "$work/bundle" --public-key "$work/keys/bench.pub" --rate 50 --threads 1 \
  --max-seconds "$SECONDS_RUN" --settle-seconds 0 --quiet --log "$work/run.cyclelog" --summary-json "$raw/loop-50hz-small.json" \
  > "$raw/loop-50hz-small.txt" 2>&1
cat "$raw/loop-50hz-small.txt" >&2

echo "4/4 binary size…" >&2
strip -o "$work/lapa-edge.stripped" "$edge"

"$PYTHON" - "$raw" "$(stat -c %s "$work/lapa-edge.stripped")" "$(stat -c %s "$edge")" "$(du -sb "$work/bundle" | cut -f1)" "${RUN:+$(basename "$RUN")}" <<'EOF'
import json, re, subprocess, sys, datetime
raw, stripped, unstripped, bundle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
name = sys.argv[5] or "small"
fresh = sys.argv[5] == ""
import glob, statistics
j = lambda n: json.load(open(f"{raw}/{n}.json"))
runs = lambda pre: [json.load(open(f)) for f in sorted(glob.glob(f"{raw}/{pre}-1thread-*.json"))]
burn_runs, torch_runs = runs("burn"), runs("torch")
def median_of(rs):
    out = dict(rs[0])
    for k in ("p50_ms", "p99_ms", "max_ms"):
        out[k] = statistics.median(r[k] for r in rs)
    return out
b1, t1 = median_of(burn_runs), median_of(torch_runs)
ratios = [b["p50_ms"] / t["p50_ms"] for b, t in zip(burn_runs, torch_runs)]
b2, t2, loop = j("burn-2threads"), j("torch-2threads"), j("loop-50hz-small")
time_v = open(f"{raw}/loop-50hz-small.time").read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v).group(1))
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
arch = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
machine = f"{nproc} cores, {arch} ({cpu}), release build"
summary = {
    "state": "measured: the small preset, random weights (vectors perturbed for the twin's check; latency and memory do not depend on the values)" if fresh else f"measured: run {name}",
    "machine": machine,
    "date": datetime.date.today().isoformat(),
    "command": "bench/edge.sh",
    "policy": {"name": name, "parameters": b1["parameters"], "mflop_per_step": b1["mflop_per_step"], "bundle_bytes": bundle},
    "step_latency_note": f"1 thread: median over {len(burn_runs)} interleaved burn/PyTorch runs of {b1['steps']} steps each; 2 threads: one run",
    "lapa_over_pytorch_p50_1_thread": {"median": statistics.median(ratios), "runs": ratios},
    "step_latency_small_lapa_ms": {"1_thread": {k: b1[k] for k in ("p50_ms", "p99_ms", "max_ms")}, "2_threads": {k: b2[k] for k in ("p50_ms", "p99_ms", "max_ms")}},
    "step_latency_small_pytorch_ms": {"1_thread": {k: t1[k] for k in ("p50_ms", "p99_ms", "max_ms")}, "2_threads": {k: t2[k] for k in ("p50_ms", "p99_ms", "max_ms")}, "torch": t1["torch"],
                                      "max_abs_logit_diff_vs_burn": t1["max_abs_logit_diff"], "same_bins_as_burn": t1["same_bins"]},
    "loop_50hz_small": {k: loop[k] for k in ("ticks", "period_p50_ms", "period_p99_ms", "period_max_ms", "dropped_ticks", "starved_ticks", "start_late_p99_ms", "work_p99_ms", "chunks", "late_chunks", "inference_p50_ms", "inference_p99_ms", "inference_threads")},
    "binary_size_stripped_bytes": stripped,
    "binary_size_unstripped_bytes": unstripped,
    "peak_memory_small_bytes": rss_kb * 1024,
}
json.dump(summary, open("results/edge/summary.json", "w"), indent=2)
f = lambda v: "—" if v is None else f"{v:.2f}"
r = lambda a, b: f"{a / b:.2f}×"
md = f"""# Edge runtime with the `small` policy — `bench/edge.sh`

Machine: {machine}; {summary['date']}. One run of `bench/edge.sh`; raw outputs in [`raw/`](raw/).
Policy: `{name}`, {b1['parameters']:,} parameters without the frozen MiniLM text encoder,
{b1['mflop_per_step']:.1f} MFLOP per step; {'fresh random weights, their gains, offsets and q/k scales moved off 1 and 0 so the twin check covers them (latency and memory do not depend on the values)' if fresh else 'a trained run'}.
Bundle: {bundle / 1e6:.1f} MB (weights, config, MiniLM encoder and tokenizer).

## One policy step (64×64 frame → decoded action chunk), {b1['steps']} timed steps

| runtime | threads | p50 | p99 | max |
|---|---|---|---|---|
| lapa (burn flex) | 1 | {f(b1['p50_ms'])} ms | {f(b1['p99_ms'])} ms | {f(b1['max_ms'])} ms |
| PyTorch {t1['torch']} eager | 1 | {f(t1['p50_ms'])} ms | {f(t1['p99_ms'])} ms | {f(t1['max_ms'])} ms |
| lapa (burn flex) | 2 | {f(b2['p50_ms'])} ms | {f(b2['p99_ms'])} ms | {f(b2['max_ms'])} ms |
| PyTorch {t2['torch']} eager | 2 | {f(t2['p50_ms'])} ms | {f(t2['p99_ms'])} ms | {f(t2['max_ms'])} ms |

At one thread the figures are the medians of {len(burn_runs)} runs of each, interleaved (burn, PyTorch, burn, …);
lapa's median step takes {statistics.median(ratios):.2f}× PyTorch's (the runs: {', '.join(f'{x:.2f}×' for x in ratios)}),
and {r(b2['p50_ms'], t2['p50_ms'])} at 2 threads (one run each). Above 1×: PyTorch is faster.
PyTorch is the PyPI wheel (its CUDA build, run on the CPU), eager mode, `torch.inference_mode()`.
The PyTorch twin (`bench/policy_torch.py`) runs the exact weights: its logits differ from burn's by at
most {t1['max_abs_logit_diff']:.1e}, and it picks the same bin for {100 * t1['same_bins']:.1f}% of the chunk's entries.

## 50 Hz loop beside the policy (`lapa-edge run --sim --bundle … --rate 50 --threads 1`)

| figure | value |
|---|---|
| ticks | {loop['ticks']:,} |
| period p50 / p99 / max | {f(loop['period_p50_ms'])} / {f(loop['period_p99_ms'])} / {f(loop['period_max_ms'])} ms (nominal 20.00) |
| dropped / starved ticks | {loop['dropped_ticks']} / {loop['starved_ticks']} |
| start late p99 | {f(loop['start_late_p99_ms'])} ms |
| loop work p99 | {f(loop['work_p99_ms'])} ms |
| chunks (late or stale) | {loop['chunks']} ({loop['late_chunks']}) |
| inference latency p50 / p99 | {f(loop['inference_p50_ms'])} / {f(loop['inference_p99_ms'])} ms |
| peak resident memory | {rss_kb / 1024:.1f} MiB (the whole process: sim, renderer, policy, MiniLM) |

## Binary

`lapa-edge` release, stripped: {stripped / 1e6:.1f} MB (unstripped, with line tables: {unstripped / 1e6:.1f} MB).
"""
open("results/edge/small.md", "w").write(md)
print(md)
EOF
