#!/usr/bin/env bash
# Runs on a GPU machine (the `device` tool's H100), from the repo root, with a prebuilt
# `lapa` (feature wgpu; burn-cuda does not build offline: cubecl-llvm downloads LLVM) and `laq_throughput` in .carry/, the sim hand dataset in
# .carry/data/sim-hand and its 64×64 frame cache (gzip) in .carry/cache/. Writes to $OUT:
#   gpu.txt, throughput.jsonl (burn vs PyTorch-CUDA, random inputs), util-*.csv (nvidia-smi
#   samples every 0.5 s during the real runs), and the run folders as .tar.gz.
set -uo pipefail
C=.carry
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" "$C/cachex"
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig 2>/dev/null
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
for f in "$C"/cache/*.json; do cp "$f" "$C/cachex/"; done
for f in "$C"/cache/*.frames.gz; do gunzip -c "$f" > "$C/cachex/$(basename "$f" .gz)"; done
export LAPA_CACHE=$PWD/$C/cachex
gunzip -f "$C"/lapa.gz 2>/dev/null; chmod +x "$C"/lapa
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt"
DEV=wgpu
timeout 60 python3 bench/laq_torch.py --config small --batch 32 --steps 20 --device cuda >> "$OUT/throughput.jsonl"
timeout 60 python3 bench/laq_torch.py --config base --batch 32 --steps 20 --device cuda >> "$OUT/throughput.jsonl"
run() { # name config steps batch
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 > "$OUT/util-$1.csv" &
  local smi=$!
  timeout "$5" "$C"/lapa train laq --data "$C"/data/sim-hand --spacing 0.6s --config "$2" --steps "$3" --batch "$4" \
    --lr 3e-4 --device $DEV --out "runs/$1" --log-every 25 --checkpoint-every 200 --quiet > "$OUT/log-$1.txt" 2>&1
  kill $smi
  tar czf "$OUT/$1.tar.gz" --exclude checkpoint -C runs "$1"
}
run small-hand small 1200 32 150
run base-hand base 300 32 90
ls -la "$OUT"
