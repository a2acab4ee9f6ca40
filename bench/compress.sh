#!/usr/bin/env bash
# The compression table, results/compress/: on one machine, in one run, on the same weights —
#   - the teacher: the LAPA table's trained lapa-arm policy (`small`, committed under
#     results/compress/success/teacher; RUN= to bench another run), as lapa f32 on burn and on
#     lapa-compress's engine (f32, int8 dynamic, int8 static calibrated min-max on simulator
#     frames, int4 weight-only), and its ONNX export on rten (f32, int8): `lapa bench compress`;
#   - the same ONNX files on ONNX Runtime (bench/onnx_ort.py), when $PYTHON has onnxruntime;
#   - the same weights in PyTorch eager, f32 and `quantize_dynamic` int8 (bench/policy_torch.py,
#     the twin `lapa bench compress --twin` writes), when $TORCH_PYTHON has torch;
#   - the student: the distillation experiment's `tiny` student trained on the labels
#     (results/compress/distill/runs/labels-only; STUDENT= for another), the same lapa variants;
#   - each policy's bundle on disk as `lapa export` writes it (f32, int8 dynamic, int4);
# at 1 and 2 threads. The Python runtimes:
#     python3 -m venv ~/.cache/ortvenv && ~/.cache/ortvenv/bin/pip install onnxruntime numpy
#     python3 -m venv ~/.cache/torchvenv && ~/.cache/torchvenv/bin/pip install torch numpy
#     bash bench/compress.sh
# Writes results/compress/{table.md,table.json,raw/} (bench/compress_table.py). STEPS and ROUNDS
# set the work (default 100 × 3). ONLY=sizes re-measures the bundles alone (after a change to the
# bundle format) and re-renders the table from the timings already in raw/; LAPA=path/to/lapa
# uses that binary instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-100}"
ROUNDS="${ROUNDS:-3}"
RUN="${RUN:-results/compress/success/teacher}"
STUDENT="${STUDENT:-results/compress/distill/runs/labels-only}"
PYTHON="${PYTHON:-$HOME/.cache/ortvenv/bin/python}"
TORCH_PYTHON="${TORCH_PYTHON:-$HOME/.cache/torchvenv/bin/python}"
ONLY="${ONLY:-}"
case "$ONLY" in ""|sizes) ;; *) echo "bench/compress.sh: ONLY=$ONLY: expected ONLY=sizes or nothing" >&2; exit 2 ;; esac
out=results/compress
raw="$out/raw"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -n "${LAPA:-}" ]; then
  lapa="$LAPA"  # a lapa binary already built (ONLY=sizes needs no release build: sizes are sizes)
else
  cargo build --release --locked -p lapa-train --bin lapa >&2
  lapa="${CARGO_TARGET_DIR:-target}/release/lapa"
fi
if [ "$ONLY" = sizes ]; then
  [ -f "$raw/args.txt" ] || { echo "bench/compress.sh: ONLY=sizes needs an earlier full run's $raw" >&2; exit 2; }
  # The bundles of the runs the timings were taken on.
  RUN=$(sed -n 's/^RUN=\([^ ]*\) .*/\1/p' "$raw/args.txt")
  STUDENT=$(sed -n 's/.* STUDENT=\([^ ]*\) .*/\1/p' "$raw/args.txt")
  [ -n "$RUN" ] && [ -n "$STUDENT" ] || { echo "bench/compress.sh: $raw/args.txt names no RUN= and STUDENT=" >&2; exit 2; }
else
rm -rf "$raw"
mkdir -p "$raw"
has_ort=0; [ -x "$PYTHON" ] && "$PYTHON" -c "import onnxruntime, numpy" 2>/dev/null && has_ort=1
has_torch=0; [ -x "$TORCH_PYTHON" ] && "$TORCH_PYTHON" -c "import torch, numpy" 2>/dev/null && has_torch=1
[ $has_ort = 1 ] || echo "bench/compress.sh: no onnxruntime at $PYTHON; the ONNX Runtime rows are left out (see the header)" >&2
[ $has_torch = 1 ] || echo "bench/compress.sh: no torch at $TORCH_PYTHON; the PyTorch rows are left out (see the header)" >&2
for t in 1 2; do
  twin=(); [ "$t" = 1 ] && [ $has_torch = 1 ] && twin=(--twin "$work/twin")
  "$lapa" bench compress --run "$RUN" --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" \
    --onnx-dir "$work/onnx-$t" "${twin[@]}" --json "$raw/lapa-${t}thread.json" | tee "$raw/lapa-${t}thread.txt"
  if [ $has_ort = 1 ]; then
    "$PYTHON" bench/onnx_ort.py --dir "$work/onnx-$t" --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" \
      --json "$raw/ort-${t}thread.json" | tee "$raw/ort-${t}thread.txt"
  fi
  if [ $has_torch = 1 ]; then
    "$TORCH_PYTHON" bench/policy_torch.py --twin "$work/twin" --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" \
      --json "$raw/torch-f32-${t}thread.json" | tee "$raw/torch-f32-${t}thread.txt"
    "$TORCH_PYTHON" bench/policy_torch.py --twin "$work/twin" --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" --int8-dynamic \
      --json "$raw/torch-int8-${t}thread.json" | tee "$raw/torch-int8-${t}thread.txt"
  fi
  "$lapa" bench compress --run "$STUDENT" --threads "$t" --steps "$STEPS" --rounds "$ROUNDS" \
    --json "$raw/student-${t}thread.json" | tee "$raw/student-${t}thread.txt"
done
echo "RUN=$RUN STUDENT=$STUDENT STEPS=$STEPS ROUNDS=$ROUNDS" > "$raw/args.txt"
fi
# Bundles on disk (unsigned; a signature adds a few hundred bytes).
sizes="$raw/bundle-bytes.txt"
: > "$sizes"
for who in teacher student; do
  run="$RUN"; [ "$who" = student ] && run="$STUDENT"
  for v in f32 int8-dynamic int4; do
    flags=(); [ "$v" = int8-dynamic ] && flags=(--int8 dynamic); [ "$v" = int4 ] && flags=(--int4)
    "$lapa" export --run "$run" --out "$work/bundle-$who-$v" --unsigned "${flags[@]}" >&2
    # The policy's weights part(s), as the manifest names them.
    policy=$(python3 -c 'import json, os, sys; d = sys.argv[1]; print(sum(os.path.getsize(os.path.join(d, w)) for w in json.load(open(os.path.join(d, "manifest.json")))["weights"]))' "$work/bundle-$who-$v")
    echo "$who $v $(du -sb "$work/bundle-$who-$v" | cut -f1) $policy" >> "$sizes"
  done
done
python3 bench/compress_table.py "$out"
