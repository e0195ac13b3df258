#!/usr/bin/env bash
# Behaviour unchanged by a refactor: fit the same configs, shrunk to a few CPU steps on synthetic data with
# --trainer.deterministic, in an OLD checkout and in this one, then compare the final weights and masks bit for bit.
#
#   git worktree add --detach /tmp/old <old commit>
#   OLD=/tmp/old bash scripts/same_results.sh            # prints one line per config
#   CONFIGS="early_bird rigl" OLD=/tmp/old bash scripts/same_results.sh   # only these
#
# The arguments use the old names (delta_t) so that both checkouts accept them.
set -u
OLD=${OLD:?set OLD to the old checkout}
NEW=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/same_results}
DATA=$WORK/data
[ -d $DATA ] || (cd $NEW && python -c "from pathlib import Path; from tests.synthetic import write_image_folder; write_image_folder(Path('$DATA'), train_per_class=20, test_per_class=10, fmt='png')")
TINY="--data.data_dir $DATA --data.train_subset 96 --data.val_size 32 --data.batch_size 16 --data.eval_batch_size 64 --data.num_workers 0 --data.download false --model.width 4 --trainer.accelerator cpu --trainer.devices 1 --trainer.precision 32-true --trainer.enable_progress_bar false --trainer.log_every_n_steps 1 --trainer.deterministic true"
for config in ${CONFIGS:-static_sparse rigl set gmp oneshot_magnitude iterative_random lottery_ticket l1_filter synflow snip grasp random_erk early_bird}; do
  for side in old new; do
    repo=$NEW; [ $side = old ] && repo=$OLD
    root=$WORK/$side/$config
    rm -rf $root; mkdir -p $WORK/$side
    extra=""
    case $config in
      lottery_ticket) extra="--trainer.callbacks.rounds 2 --trainer.callbacks.epochs_per_round 1";;
      iterative_random) extra="--trainer.callbacks.epochs_per_round 1 --trainer.callbacks.finetune_epochs 1 --trainer.callbacks.target_sparsity 0.5 --trainer.callbacks.prune_fraction 0.3";;
      oneshot_magnitude) extra="--trainer.callbacks.epochs_per_round 1 --trainer.callbacks.finetune_epochs 1";;
      l1_filter) extra="--trainer.callbacks.epochs_per_round 1 --trainer.callbacks.finetune_epochs 1";;
      rigl|set) extra="--trainer.max_epochs 2 --trainer.callbacks.delta_t 2";;
      synflow) extra="--trainer.callbacks.iterations 2 --trainer.max_epochs 2";;
      early_bird) extra="--trainer.max_epochs 3 --trainer.callbacks.window 2 --trainer.callbacks.threshold 0.5";;
      *) extra="--trainer.max_epochs 2";;
    esac
    [ $config = gmp ] && extra="--trainer.max_epochs 4 --trainer.callbacks.update_every 2"
    [ -f $repo/configs/$config.yaml ] || { echo "$config: no config on $side"; continue; }
    (cd $repo && python cli.py fit --config configs/$config.yaml $TINY --trainer.default_root_dir $root $extra > $root.log 2>&1) || echo "$config $side: fit failed (rc $?)"
  done
  python - "$config" "$WORK" <<'PY'
import sys, torch
name, work = sys.argv[1], sys.argv[2]
def load(side):
    path = f"{work}/{side}/{name}/checkpoints/last.ckpt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
old, new = load("old"), load("new")
if old is None or new is None:
    print(f"{name}: missing checkpoint (old {old is not None}, new {new is not None})"); sys.exit()
same_w = old["state_dict"].keys() == new["state_dict"].keys() and all(torch.equal(old["state_dict"][k], new["state_dict"][k]) for k in old["state_dict"])
def masks(ck):
    found = [s["masks"] for s in ck.get("callbacks", {}).values() if isinstance(s, dict) and s.get("masks") is not None]
    return found[0] if found else None
mo, mn = masks(old), masks(new)
same_m = (mo is None and mn is None) or (mo is not None and mn is not None and mo.keys() == mn.keys() and all(torch.equal(mo[k], mn[k]) for k in mo))
sparsity = None
if mn:
    total = sum(v.numel() for v in mn.values()); kept = sum(int(v.sum()) for v in mn.values()); sparsity = 1 - kept / total
print(f"{name}: weights identical {same_w}, masks identical {same_m}, step {old['global_step']} vs {new['global_step']}, sparsity {sparsity}")
PY
done
