#!/usr/bin/env bash
# Data-parallel training throughput: the same `small` action-training run (batch 32) on one
# device and on several replicas, back to back in one session, so the figures compare as ratios.
# Each row runs STEPS steps and reports the mean samples/s of the steps after the first WARM.
# On a CPU machine the default rows are one device at 1 and at every thread, and two replicas on
# the one CPU device (`--device cpu,cpu`); on a GPU box set ROWS, e.g.
#   FEATURES=wgpu ROWS="wgpu:1 wgpu,wgpu:1" bench/dp_speedup.sh
#   FEATURES=cuda ROWS="cuda:0:1 cuda:0,cuda:1:1" bench/dp_speedup.sh
# (each row is DEVICES:THREADS; the last field is the CPU thread count). Needs data/sim-arm (the
# README's main job records it) and the text encoder (scripts/fetch-minilm.sh). Writes
# results/dp/speedup.md.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-60}
WARM=${WARM:-10}
DATA=${DATA:-data/sim-arm}
ROWS=${ROWS:-"cpu:1 cpu:$(nproc) cpu,cpu:$(nproc)"}
target="${CARGO_TARGET_DIR:-target}"
feat=()
[ -n "${FEATURES:-}" ] && feat=(--features "$FEATURES")
cargo build --release --locked -q -p lapa-train "${feat[@]}"
[ -d "$DATA" ] || { echo "dp_speedup: $DATA is missing; record it first (README, main job)" >&2; exit 1; }
out=results/dp/speedup.md
mkdir -p results/dp
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rows_md=()
base=""
for row in $ROWS; do
  threads=${row##*:}
  devices=${row%:*}
  run="$tmp/run-$(echo "$row" | tr ',:' '__')"
  RAYON_NUM_THREADS=$threads "$target/release/lapa" train action --data "$DATA" --config small --chunk 4 --bins 256 \
    --steps "$STEPS" --log-every 10 --batch 32 --seed 0 --device "$devices" --out "$run" --quiet >/dev/null
  # metrics.csv: step,loss,accuracy,lr,samples_per_s,elapsed_s — one row per logged step.
  sps=$(awk -F, -v warm="$WARM" 'NR > 1 && $1 > warm {s += $5; n++} END {if (n) printf "%.1f", s / n}' "$run/metrics.csv")
  [ -n "$sps" ] || { echo "dp_speedup: $row logged no steps after $WARM" >&2; exit 1; }
  [ -n "$base" ] || base=$sps
  rows_md+=("| \`$devices\` | $threads | $sps | $(python3 -c "print(f'{$sps/$base:.2f}')")× |")
  echo "$devices, $threads threads: $sps samples/s"
done
{
  echo "# Data-parallel training throughput"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%d)."
  echo "\`lapa train action --config small --batch 32\` on \`$DATA\`, $STEPS steps; mean samples/s of the steps after $WARM"
  echo "(as metrics.csv logs them). Rows run back to back in one session; compare them as ratios to the first."
  echo "Command: \`ROWS=\"$ROWS\" bench/dp_speedup.sh\`."
  echo
  echo "| --device | CPU threads | samples/s | vs first row |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows_md[@]}"
} > "$out"
echo "dp_speedup: wrote $out"
