#!/usr/bin/env bash
# Closed-loop success of the compressed policy (issue 14's "int8 within 2 points of f32"): the
# distillation experiment's teacher (`small`, finetuned from the LAPA table's pretrained lapa-arm
# trunk on N = 40 labeled arm episodes — the LAPA table's lapa-arm cell — by bench/distill.sh's
# command, remade here into results/compress/success/teacher) exported as bundles, f32, int8
# (dynamic; static with min-max ranges over 256 frames of its finetuning dataset) and weight-only
# int4, and the distillation experiment's `tiny` student (trained on the labels; STUDENT=) in f32 and
# int8 dynamic, each evaluated by `lapa eval --bundle` exactly as the
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
STUDENT="${STUDENT:-results/compress/distill/runs/labels-only}"
EPISODES="${EPISODES:-100}"
export RAYON_NUM_THREADS="${THREADS:-1}"
mkdir -p "$OUT/bundles"
source bench/teacher.sh
table_data
RAYON_NUM_THREADS="${TEACHER_THREADS:-2}" teacher "$TEACHER"

bundle() { # name run [export flags]
  local b="$OUT/bundles/$1" run="$2"; shift 2
  [ -f "$b/manifest.json" ] && return
  local cmd=("$LAPA" export --run "$run" --out "$b" --unsigned "$@")
  log "${cmd[*]}"
  "${cmd[@]}"
}
bundle f32 "$TEACHER"
bundle int8-dynamic "$TEACHER" --int8 dynamic
bundle int8-static "$TEACHER" --int8 static --calib data/sim-arm --calib-frames 256
bundle int4 "$TEACHER" --int4
# The student: the distillation experiment's `tiny` trained on the same 40 episodes' labels (its
# weights are committed), f32 and int8 dynamic.
bundle student-f32 "$STUDENT"
bundle student-int8-dynamic "$STUDENT" --int8 dynamic

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
  for name in f32 int8-dynamic int8-static int4 student-f32 student-int8-dynamic; do echo "$name $split"; done
done | xargs -P "${JOBS:-2}" -L 1 bash -c 'evaluate "$0" "$1"'
python3 bench/compress_success_table.py "$OUT"
