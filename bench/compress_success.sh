#!/usr/bin/env bash
# Closed-loop success of the compressed policy (issue 14's "int8 within 2 points of f32"): the
# distillation experiment's teacher (`small`, finetuned from the LAPA table's pretrained lapa-arm
# trunk on N = 40 labeled arm episodes — the LAPA table's lapa-arm cell — by bench/distill.sh's
# command, remade here into results/compress/success/teacher) exported as bundles, f32, int8
# (dynamic; static with min-max ranges over 256 frames of its finetuning dataset) and weight-only
# int4, each evaluated by `lapa eval --bundle` exactly as the
# board loads it (the int8 engine on lapa-compress's kernels), on the four splits, 100 rollouts
# each, with the LAPA table's evaluation seeds. The f32 bundle runs on burn through the same
# one-episode-at-a-time path, so the rows differ only in the arithmetic.
#
# Resumable: an interrupted teacher resumes from its checkpoint; a finished bundle or evaluation is skipped. Writes results/compress/success/
# {table.md,table.json,commands.txt}.
#
#   LAPA=target/release/lapa bash bench/compress_success.sh     # THREADS=1 JOBS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
LAPA="${LAPA:-target/release/lapa}"
OUT=results/compress/success
TEACHER=$OUT/teacher
EPISODES="${EPISODES:-100}"
export RAYON_NUM_THREADS="${THREADS:-1}"
mkdir -p "$OUT/bundles"
source bench/teacher.sh
table_data
RAYON_NUM_THREADS="${TEACHER_THREADS:-2}" teacher "$TEACHER"

bundle() { # name [export flags]
  local b="$OUT/bundles/$1"; shift
  [ -f "$b/manifest.json" ] && return
  local cmd=("$LAPA" export --run "$TEACHER" --out "$b" --unsigned "$@")
  log "${cmd[*]}"
  "${cmd[@]}"
}
bundle f32
bundle int8-dynamic --int8 dynamic
bundle int8-static --int8 static --calib data/sim-arm --calib-frames 256
bundle int4 --int4

evaluate() { # name split
  local r="$OUT/eval/$1/$2.json"
  [ -f "$r" ] && return
  mkdir -p "$OUT/eval/$1"
  local cmd=("$LAPA" eval --bundle "$OUT/bundles/$1" --allow-unsigned --split "$2" --episodes "$EPISODES" --out "$r" --videos 0 --quiet)
  log "${cmd[*]}"
  "${cmd[@]}" 2> >(grep -v "without a verified signature" >&2)
}
export LAPA OUT EPISODES
export -f evaluate log
for split in seen unseen-objects unseen-instructions unseen-env; do
  for name in f32 int8-dynamic int8-static int4; do echo "$name $split"; done
done | xargs -P "${JOBS:-2}" -L 1 bash -c 'evaluate "$0" "$1"'
python3 bench/compress_success_table.py "$OUT"
