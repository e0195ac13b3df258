#!/usr/bin/env bash
# The CPU study of docs/results.md ("CPU study"), resumably: every sweep skips finished runs and resumes interrupted
# ones, so calling this again after a stop continues where it stopped. Seed by seed:
#
#   DATA=/tmp/cifar10 SEEDS="0" bash scripts/cpu_study.sh          # then SEEDS="1", SEEDS="2"
#   DATA=/tmp/cifar10 TIME_LIMIT=3600 SEEDS="0 1 2" bash scripts/cpu_study.sh [step ...]
#
# DATA        CIFAR-10 directory (the JPEG copy: mkdir -p /tmp/cifar10 && tar -xzf cifar10-jpeg.tar.gz -C /tmp/cifar10)
# TIME_LIMIT  seconds this call may use (each sweep stops fit via trainer.max_time and exits); default unlimited
# SEEDS       seeds; default "0 1 2"
# ROOT        where runs go; default runs/study
# steps       any of: dense lth oneshot iterative pai dst width han early_bird collapse collect (default: all, in order)
#             collect copies every run's config.yaml, summary.json and rounds.csv (no checkpoints) to docs/results/cpu
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA=${DATA:-./data}
SEEDS=${SEEDS:-"0 1 2"}
ROOT=${ROOT:-runs/study}
START=$(date +%s)
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(dense lth oneshot iterative pai dst width han early_bird collapse collect)
DENSE_CKPT="trainer.callbacks.dense_checkpoint=$ROOT/dense/seed{seed}/checkpoints/last.ckpt"

sweep() {
  local limit=()
  if [ -n "${TIME_LIMIT:-}" ]; then
    local left=$(( TIME_LIMIT - ($(date +%s) - START) ))
    if [ "$left" -lt 120 ]; then echo "[cpu_study] time limit reached; call again to continue"; exit 0; fi
    limit=(--time-limit "$left")
  fi
  # shellcheck disable=SC2086
  # A failed run does not stop the study (the sweep already went on with its other runs): the next steps still
  # run, and this script exits 1 at the end.
  python cli.py sweep --root "$ROOT" --seeds $SEEDS "${limit[@]}" "$@" -- --data.data_dir "$DATA" || FAILED=1
}
FAILED=0

for step in "${STEPS[@]}"; do
  case "$step" in
    dense)      sweep --config configs/study/dense.yaml ;;
    lth)        sweep --config configs/study/lth_late_rewind.yaml
                sweep --config configs/study/lth_rewind_init.yaml
                sweep --config configs/study/lth_reinit.yaml --set "$DENSE_CKPT" \
                  --set "trainer.callbacks.masks_from=$ROOT/lth_late_rewind/seed{seed}" ;;
    oneshot|iterative)
                for score in magnitude random; do
                  sweep --config "configs/study/$step.yaml" --label "${step}_$score" \
                    --set "trainer.callbacks.score=$score" --set "$DENSE_CKPT"
                done ;;
    pai)        for method in synflow snip grasp random_erk random_uniform; do
                  sweep --config "configs/study/$method.yaml"
                done ;;
    dst)        for method in rigl set static; do sweep --config "configs/study/$method.yaml"; done ;;
    width)      for width in 8 32; do  # width 16 is the dense and random_erk runs themselves
                  sweep --config configs/study/dense.yaml --label "dense_w$width" --set "model.width=$width"
                  sweep --config configs/study/random_erk.yaml --label "random_erk_w$width" --set "model.width=$width"
                done ;;
    han)        sweep --config configs/study/han.yaml --set "$DENSE_CKPT" ;;
    early_bird) sweep --config configs/study/early_bird.yaml ;;
    collapse)   [ -f docs/results/cpu/layer_collapse.json ] || python scripts/layer_collapse.py --data-dir "$DATA" \
                  --out docs/results/cpu ;;
    collect)    python - "$ROOT" docs/results/cpu <<'PY'
import shutil, sys
from pathlib import Path
root, out = Path(sys.argv[1]), Path(sys.argv[2])
for summary in sorted(root.rglob("summary.json")):
    run = summary.parent
    target = out / run.relative_to(root)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "summary.json", "rounds.csv"):
        if (run / name).is_file():
            shutil.copyfile(run / name, target / name)
print(f"collected {len(list(root.rglob('summary.json')))} runs into {out}")
PY
                ;;
    *) echo "unknown step '$step'; allowed: dense lth oneshot iterative pai dst width han early_bird collapse collect" >&2
       exit 2 ;;
  esac
done
if [ "$FAILED" -ne 0 ]; then echo "[cpu_study] some runs failed; see the [sweep] lines above" >&2; exit 1; fi
