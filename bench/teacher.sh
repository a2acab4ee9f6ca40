# Sourced by bench/distill.sh and bench/compress_success.sh: the LAPA table's data and its
# lapa-arm N = 40 policy (`small`, finetuned from the committed pretrained trunk) as a teacher.
# Needs LAPA (the lapa binary) and OUT (where commands.txt and times.txt go).

log() { echo "$*" >> "$OUT/commands.txt"; echo "+ $*"; }

# A run is done when its metrics end at the step asked for (model/ is written from step 0 on).
finished() { [ -f "$1/metrics.csv" ] && [ "$(tail -n1 "$1/metrics.csv" | cut -d, -f1)" = "$2" ]; }

# The table's data (the same command as results/lapa-table: the teacher's train.json names it)
# and the frozen text encoder.
table_data() {
  if [ ! -f data/sim-arm/meta/info.json ]; then
    log "$LAPA" sim record --embodiment arm --episodes 240 --out data/sim-arm --seed 100 --codec h264 --crf 18
    "$LAPA" sim record --embodiment arm --episodes 240 --out data/sim-arm --seed 100 --codec h264 --crf 18
  fi
  bash scripts/fetch-minilm.sh
}

# The teacher into $1, resumed from its checkpoint when one is there.
teacher() {
  finished "$1" 2000 && return
  local resume=()
  # (train.json is written at step 0, the first checkpoint later: resume only from a checkpoint.)
  { [ -d "$1/checkpoint" ] || [ -d "$1/checkpoint.old" ]; } && resume=(--resume)
  local cmd=("$LAPA" train finetune --init results/lapa-table/runs/pretrain-lapa-arm --data data/sim-arm --episodes 40 --chunk 4 --bins 256
    --config small --steps 2000 --batch 32 --lr 0.0003 --seed 0 --out "$1" --quiet "${resume[@]}")
  log "${cmd[*]}"
  /usr/bin/time -f "teacher: %e s wall, %U s user" -a -o "$OUT/times.txt" "${cmd[@]}"
}
