#!/usr/bin/env bash
# LAQ training throughput, burn (flex CPU backend) vs the same model in PyTorch-CPU, same config,
# batch, optimiser and thread count, back to back in one session, at one thread and at every core
# (to separate per-core speed from multi-core scaling). Writes results/laq/throughput.md.
# Needs a Python with torch (pip install torch numpy), e.g.
#   python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
#   PYTHON=/tmp/torchvenv/bin/python bench/laq_throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-10}
CONFIGS=${CONFIGS:-"tiny small"}
THREADS=${THREADS:-"1 $(nproc)"}
BATCH=${BATCH:-32}
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p lapa-train --example laq_throughput >/dev/null
out=results/laq/throughput.md
mkdir -p results/laq
sps() { sed -n 's/.*"samples_per_s": \([0-9.]*\).*/\1/p'; }
# Cores kept busy: (user + sys CPU seconds) / wall seconds of the whole process.
busy() { awk '/^cpu-wall/ {printf "%.2f", ($3 + $4) / $2}' "$1"; }
{
  echo "# LAQ training throughput: burn vs PyTorch, CPU"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%d);"
  echo "batch $BATCH; $STEPS timed steps after 3 warm-up steps; random frames; Adam + per-tensor clipping;"
  echo "loss and codes read back every step in both. burn threads: RAYON_NUM_THREADS; PyTorch: torch.set_num_threads."
  echo "\"cores busy\" = CPU seconds / wall seconds of the whole process (warm-up and set-up included)."
  echo "Command: \`bench/laq_throughput.sh\`."
  echo
  echo "| config | threads | burn samples/s | burn cores busy | PyTorch samples/s | PyTorch cores busy | burn / PyTorch |"
  echo "|---|---|---|---|---|---|---|"
  for c in $CONFIGS; do
    for t in $THREADS; do
      b=$(RAYON_NUM_THREADS=$t /usr/bin/time -f "cpu-wall %e %U %S" -o /tmp/lapa-bench-b.txt \
        "$target/release/examples/laq_throughput" "$c" "$BATCH" "$STEPS" cpu | sps)
      p=$(/usr/bin/time -f "cpu-wall %e %U %S" -o /tmp/lapa-bench-p.txt \
        "$PYTHON" bench/laq_torch.py --config "$c" --batch "$BATCH" --steps "$STEPS" --threads "$t" | sps)
      r=$(python3 -c "print(f'{$b/$p:.2f}')")
      echo "| $c | $t | $(python3 -c "print(f'{$b:.1f}')") | $(busy /tmp/lapa-bench-b.txt) | $(python3 -c "print(f'{$p:.1f}')") | $(busy /tmp/lapa-bench-p.txt) | ${r}× |"
    done
  done
} | tee "$out"
