#!/usr/bin/env bash
# Runs the reproduction protocol of docs/results.md, resumably: every sweep skips finished runs and resumes
# interrupted ones, so calling this again after a timeout or a lost machine continues where it stopped.
#
#   DATA=/tmp/cifar10 TIME_LIMIT=540 SEEDS="0 1 2" bash scripts/reproduce.sh [step ...]
#
# DATA        CIFAR-10 directory (image folder or cifar-10-batches-py); default ./data
# TIME_LIMIT  seconds this call may use (each sweep stops fit via trainer.max_time and exits); default unlimited
# SEEDS       seeds; default "0 1 2"
# ROOT        where runs go; default runs/repro
# steps       any of: dense lth late han oneshot iterative pai dst report (default: all, in this order)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA=${DATA:-./data}
SEEDS=${SEEDS:-"0 1 2"}
ROOT=${ROOT:-runs/repro}
START=$(date +%s)
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(dense lth late han oneshot iterative pai dst report)
DENSE_CKPT="trainer.callbacks.dense_checkpoint=$ROOT/dense/seed{seed}/checkpoints/last.ckpt"

sweep() {
  local limit=()
  if [ -n "${TIME_LIMIT:-}" ]; then
    local left=$(( TIME_LIMIT - ($(date +%s) - START) ))
    if [ "$left" -lt 120 ]; then echo "[reproduce] time limit reached; call again to continue"; exit 0; fi
    limit=(--time-limit "$left")
  fi
  # shellcheck disable=SC2086
  python cli.py sweep --root "$ROOT" --seeds $SEEDS "${limit[@]}" "$@" -- --data.data_dir "$DATA"
}

for step in "${STEPS[@]}"; do
  case "$step" in
    dense)     sweep --config configs/repro/dense.yaml ;;
    lth)       sweep --config configs/repro/lth_rewind_init.yaml ;;
    late)      sweep --config configs/repro/lth_late_rewind.yaml ;;
    han)       sweep --config configs/repro/han.yaml --set "$DENSE_CKPT" ;;
    oneshot)   sweep --config configs/repro/oneshot.yaml --set trainer.callbacks.target_sparsity=0.5,0.75,0.9 \
                 --set "$DENSE_CKPT" ;;
    iterative) sweep --config configs/repro/iterative.yaml --set trainer.callbacks.target_sparsity=0.5,0.75,0.9 \
                 --set "$DENSE_CKPT" ;;
    pai)       for method in synflow snip grasp random_erk; do
                 sweep --config "configs/repro/$method.yaml" --set trainer.callbacks.target_sparsity=0.9,0.99
               done ;;
    dst)       for method in rigl set; do
                 sweep --config "configs/repro/$method.yaml" --set trainer.callbacks.target_sparsity=0.8,0.9
               done ;;
    report)    python cli.py report "$ROOT" --out docs/results ;;
    *) echo "unknown step '$step'; allowed: dense lth late han oneshot iterative pai dst report" >&2; exit 2 ;;
  esac
done
