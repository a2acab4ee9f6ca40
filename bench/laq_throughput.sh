#!/usr/bin/env bash
# LAQ training throughput, burn (flex CPU backend) vs the same model in PyTorch-CPU, same config,
# batch, optimiser and thread count, back to back in one session. Writes
# results/laq/throughput.md. Needs: a Python with torch (pip install torch numpy), e.g.
#   python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
#   PYTHON=/tmp/torchvenv/bin/python bench/laq_throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-10}
CONFIGS=${CONFIGS:-"tiny small"}
BATCH=${BATCH:-32}
cargo build --release --locked -p lapa-train --example laq_throughput >/dev/null
out=results/laq/throughput.md
mkdir -p results/laq
{
  echo "# LAQ training throughput: burn vs PyTorch, CPU"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); PyTorch threads: $THREADS;"
  echo "batch $BATCH; $STEPS timed steps after 3 warm-up steps; random frames; Adam + per-tensor clipping;"
  echo "loss and codes read back every step in both. Command: \`bench/laq_throughput.sh\`."
  echo
  echo "| config | burn samples/s | PyTorch samples/s | burn / PyTorch |"
  echo "|---|---|---|---|"
  for c in $CONFIGS; do
    b=$(./target/release/examples/laq_throughput "$c" "$BATCH" "$STEPS" cpu | sed -n 's/.*"samples_per_s": \([0-9.]*\).*/\1/p')
    t=$("$PYTHON" bench/laq_torch.py --config "$c" --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" | sed -n 's/.*"samples_per_s": \([0-9.]*\).*/\1/p')
    r=$(python3 -c "print(f'{$b/$t:.2f}')")
    echo "| $c | $b | $(python3 -c "print(f'{$t:.2f}')") | ${r}× |"
  done
} | tee "$out"
