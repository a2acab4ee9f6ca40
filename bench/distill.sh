#!/usr/bin/env bash
# Distillation on the LAPA table's data (issue 14): the LAPA table's lapa-arm policy (`small`,
# finetuned from the committed pretrained trunk results/lapa-table/runs/pretrain-lapa-arm on
# N = 40 labeled arm episodes, by the table's own command; its weights are not committed, so it is
# remade here into runs/teacher) is the teacher; a `tiny`
# student is distilled from it on those 40 labeled episodes plus the video of all 240 arm
# episodes (unlabeled: the teacher's distributions are the only targets there), and the same
# student is trained from the 40 episodes' labels alone (label weight 1 and no unlabeled video:
# the teacher lends only its bins; same size, batches and steps). Both are evaluated closed loop on the four splits, 100 rollouts
# each, with the same seeds as the LAPA table's rows, and so is the teacher.
#
# Two levers were tried after the first table, by hand (commands.txt has them): the distilled run
# continued to 6,000 steps (a copy of runs/distilled resumed with `lapa compress distill --resume
# --steps 6000`) and a run at temperature 1 (`--temperature 1`, otherwise as runs/distilled).
# A third (2026-12-08): distillation on the labeled frames alone (`--label-weight 0.5`, no
# --unlabeled: every batch carries both the labels and the teacher's distributions), from the
# teacher remade with committed weights in results/compress/success/teacher (the same command).
#
# Resumable: a finished run or evaluation is skipped, an interrupted training resumes from its
# last checkpoint. Writes results/compress/distill/{table.md,table.json} and commands.txt.
#
#   LAPA=target/release/lapa bash bench/distill.sh        # THREADS=1 JOBS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
LAPA="${LAPA:-target/release/lapa}"
OUT=results/compress/distill
TEACHER=$OUT/runs/teacher
STEPS="${STEPS:-2000}"
EPISODES="${EPISODES:-100}"
export RAYON_NUM_THREADS="${THREADS:-1}"
mkdir -p "$OUT/runs"
source bench/teacher.sh
table_data
teacher "$TEACHER"

student() { # name label_weight [unlabeled dataset]
  local run="$OUT/runs/$1"
  finished "$run" "$STEPS" && return
  local cmd=("$LAPA" compress distill --teacher "$TEACHER" --student-config tiny --label-weight "$2" ${3:+--unlabeled "$3"})
  { [ -d "$run/checkpoint" ] || [ -d "$run/checkpoint.old" ]; } && cmd=("$LAPA" compress distill --resume)
  cmd+=(--steps "$STEPS" --out "$run" --quiet)
  log "${cmd[*]}"
  /usr/bin/time -f "$1: %e s wall, %U s user" -a -o "$OUT/times.txt" "${cmd[@]}"
}

evaluate() { # name split
  local run="$OUT/runs/$1"
  [ -f "$run/eval/$2.json" ] && return
  local cmd=("$LAPA" eval --run "$run" --split "$2" --episodes "$EPISODES" --out "$run/eval/$2.json" --videos 0 --quiet)
  log "${cmd[*]}"
  "${cmd[@]}"
}

student distilled 0.5 data/sim-arm &
student labels-only 1.0 &
wait
for split in seen unseen-objects unseen-instructions unseen-env; do
  evaluate distilled "$split" &
  evaluate labels-only "$split" &
  wait
done
for split in seen unseen-objects unseen-instructions unseen-env; do evaluate teacher "$split"; done
python3 bench/distill_table.py "$OUT" "$TEACHER"
