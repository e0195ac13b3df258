"""Prune-after-training callbacks (Lottery Ticket IMP, Han et al., one-shot and iterative) on a tiny ResNet."""

from __future__ import annotations

import csv
import itertools
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from pruning_callbacks import HanMagnitude, IterativePruning, LotteryTicket
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.schedules import RoundPlan
from pruning_callbacks.engine.selection import prune_below_std_threshold
from tests.helpers import REPO, tiny_overrides
from tests.tiny import TinyClassifier, fit_tiny


class RoundStartSpy(Callback):
    """Runs after the pruning callback's hooks and records what each round starts from."""

    def __init__(self, pruner: IterativePruning) -> None:
        self.pruner = pruner
        self.starts: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch not in self.pruner.plan.starts:
            return
        optimizer = trainer.optimizers[0]
        self.starts.append(
            {
                "round": self.pruner.round,
                "masks": Masks(self.pruner.masks.state_dict()),
                "weights": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                "lr": optimizer.param_groups[0]["lr"],
                "optimizer_state": len(optimizer.state),
            }
        )


def fit(pruner, tmp_path, extra=(), **model_kwargs) -> tuple[Trainer, RoundStartSpy]:
    """Fit the shared tiny model with ``pruner`` (and ``extra`` callbacks before it); the round spy runs last."""
    spy = RoundStartSpy(pruner)
    trainer = fit_tiny([*extra, pruner, spy], tmp_path, model_kwargs=model_kwargs)
    return trainer, spy


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_sparsity_after_r_rounds_is_exactly_one_minus_point_eight_to_the_r(tmp_path, scope):
    pruner = LotteryTicket(rounds=3, epochs_per_round=1, prune_fraction=0.2, scope=scope)
    trainer, spy = fit(pruner, tmp_path)
    total = pruner.masks.total
    assert [row["round"] for row in pruner.rows] == [0, 1, 2, 3]
    for row in pruner.rows:
        assert row["remaining_weights"] == round(0.8 ** row["round"] * total)
    if scope == "layerwise":
        for name, kept in pruner.masks.remaining_per_layer().items():
            assert abs(kept - 0.8**3 * pruner.masks[name].numel()) <= 1, name
    # Masks only shrink from round to round.
    chain = [start["masks"] for start in spy.starts]
    assert all(later.is_subset_of(earlier) for earlier, later in itertools.pairwise(chain))
    assert trainer.current_epoch == 4 and trainer.max_epochs == 4


def test_each_round_starts_from_the_rewind_weights_with_fresh_optimizer_and_rewound_lr(tmp_path):
    pruner = LotteryTicket(rounds=2, epochs_per_round=3, prune_fraction=0.2, rewind_epoch=1, scope="global")
    _trainer, spy = fit(pruner, tmp_path, lr=0.1, milestones=[1], gamma=0.1)
    assert pruner.plan == RoundPlan(starts=(0, 3, 5), total_epochs=7)
    rewind = pruner.rewind_state
    assert (tmp_path / "rewind_epoch1.pt").exists()
    saved = torch.load(tmp_path / "rewind_epoch1.pt", weights_only=True)
    assert all(torch.equal(saved[name], value) for name, value in rewind.items())
    for start in spy.starts[1:]:
        masks = start["masks"]
        for name, value in start["weights"].items():
            expected = rewind[name] * masks[name] if name in masks else rewind[name]
            assert torch.equal(value, expected), name
        # A new optimizer (no momentum yet) and the schedule at epoch 1, after the milestone.
        assert start["optimizer_state"] == 0
        assert start["lr"] == pytest.approx(0.01)
    assert spy.starts[0]["lr"] == pytest.approx(0.1)


def test_finetune_keeps_trained_weights_and_restarts_lr_at_finetune_lr(tmp_path):
    pruner = LotteryTicket(rounds=1, epochs_per_round=2, prune_fraction=0.5, reset="finetune", finetune_lr=0.03)
    seen = {}

    class BeforeTransition(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    _trainer, spy = fit(pruner, tmp_path, extra=[BeforeTransition()], lr=0.1)
    assert pruner.plan.total_epochs == 4 and pruner.rewind_state is None
    start = spy.starts[1]
    trained = seen[1]
    for name, value in start["weights"].items():
        expected = trained[name] * start["masks"][name] if name in start["masks"] else trained[name]
        assert torch.equal(value, expected), name
    assert start["lr"] == pytest.approx(0.03) and start["optimizer_state"] == 0


def test_one_shot_and_iterative_to_a_target(tmp_path):
    one_shot = IterativePruning(target_sparsity=0.5, epochs_per_round=1)
    iterative = IterativePruning(target_sparsity=0.5, prune_fraction=0.1, epochs_per_round=1, reset="finetune")
    assert one_shot.schedule.rounds == 1
    assert iterative.schedule.rounds == math.ceil(math.log(0.5) / math.log(0.9)) == 7
    fit(iterative, tmp_path)
    total = iterative.masks.total
    assert [row["remaining_weights"] for row in iterative.rows] == [round(total * max(0.9**r, 0.5)) for r in range(8)]


def test_random_score_prunes_by_seeded_random_scores(tmp_path):
    first = IterativePruning(target_sparsity=0.6, score="random", scope="layerwise", epochs_per_round=1, seed=3)
    second = IterativePruning(target_sparsity=0.6, score="random", scope="layerwise", epochs_per_round=1, seed=3)
    fit(first, tmp_path / "a")
    fit(second, tmp_path / "b")
    assert first.masks == second.masks and first.masks.remaining() == round(0.4 * first.masks.total)


def test_remaining_std_threshold_rule_on_a_hand_computed_layer():
    weights = torch.tensor([0.1, -0.2, 0.3, -0.4, 2.0, 0.0, -0.05, 1.0])
    masks = Masks({"w": torch.tensor([1, 1, 1, 1, 1, 0, 1, 1])})
    alive = torch.tensor([0.1, -0.2, 0.3, -0.4, 2.0, -0.05, 1.0], dtype=torch.float64)
    threshold = 0.5 * float(alive.std())  # 0.5 * 0.8141... = 0.407
    new = prune_below_std_threshold({"w": weights}, masks, quality=0.5, std_of="remaining")
    assert new["w"].tolist() == [
        abs(w) >= threshold and m for w, m in zip(weights.tolist(), masks["w"].tolist(), strict=True)
    ]
    assert new["w"].tolist() == [False, False, False, False, True, False, False, True]


def test_han_from_a_dense_checkpoint_fine_tunes_at_its_lr(tmp_path):
    dense = TinyClassifier()
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    pruner = HanMagnitude(quality=0.5, rounds=2, finetune_epochs=1, finetune_lr=0.01,
                          dense_checkpoint=str(tmp_path / "dense.pt"))  # fmt: skip
    _trainer, spy = fit(pruner, tmp_path, lr=0.1)
    assert pruner.plan == RoundPlan(starts=(0, 0, 1), total_epochs=2)
    assert [row["round"] for row in pruner.rows] == [0, 1, 2]
    assert pruner.rows[0]["sparsity"] == 0.0 and pruner.rows[0]["val_acc"] is not None
    sparsities = [row["sparsity"] for row in pruner.rows]
    assert sparsities[0] < sparsities[1] < sparsities[2]
    assert all(start["lr"] == pytest.approx(0.01) for start in spy.starts)
    # Round 1 pruned the loaded weights: every kept weight is at least 0.5 std of the dense layer.
    loaded = torch.load(tmp_path / "dense.pt", weights_only=True)
    first = spy.starts[0]["masks"]
    for name, mask in first.items():
        threshold = 0.5 * loaded[name].double().std()
        assert bool((loaded[name][mask].abs() >= threshold).all()), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"rounds": 3, "epochs_per_round": 2, "prune_fraction": 0.2, "rewind_epoch": 2},
            r"rewind_epoch must be in \[0, epochs_per_round\)",
        ),
        ({"rounds": 3, "prune_fraction": 1.2}, r"prune_fraction must be in \(0, 1\), got 1.2"),
        ({"epochs_per_round": 2}, "give rounds and prune_fraction"),
        ({"rounds": 2, "target_sparsity": 0.5, "prune_fraction": 0.2}, "rounds .* and target_sparsity .* conflict"),
        ({"target_sparsity": 0.5, "reset": "restart"}, "reset must be one of rewind, finetune, reinit, got 'restart'"),
        ({"target_sparsity": 0.5, "score": "taylor"}, "unknown score 'taylor'"),
        ({"target_sparsity": 0.5, "scope": "per_layer"}, "scope must be one of global, layerwise"),
        ({"target_sparsity": 0.5, "finetune_lr": 0.0, "reset": "finetune"}, "finetune_lr must be a positive finite"),
        ({"target_sparsity": 0.5, "dense_checkpoint": "missing.ckpt"}, "there is no early point to rewind to"),
        ({"target_sparsity": 0.5, "dense_checkpoint": "missing.ckpt", "reset": "finetune"}, "is not a file"),
    ],
)
def test_bad_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IterativePruning(**kwargs)


def test_kill_in_round_two_then_resume_matches_the_uninterrupted_run(cifar_dir, tmp_path):
    def cli_fit(root, *extra):
        command = [
            sys.executable, "cli.py", "fit", "--config", "configs/quickstart.yaml",
            *tiny_overrides(cifar_dir, root), "--trainer.deterministic", "true",
            "--trainer.callbacks.rounds=3", "--trainer.callbacks.epochs_per_round=2",
            "--trainer.callbacks.rewind_epoch=1", *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    straight = cli_fit(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    # Rounds of 2, 1, 1, 1 epochs with 6 steps each: round 2 is steps 18-24.
    killed = cli_fit(tmp_path / "resumed", "--trainer.callbacks+=tests.helpers.SigkillAtStep",
                     "--trainer.callbacks.step=20")  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    resumed = cli_fit(tmp_path / "resumed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    actual = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert actual["global_step"] == expected["global_step"] == 30
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    state_expected, state_actual = expected["callbacks"]["LotteryTicket"], actual["callbacks"]["LotteryTicket"]
    assert all(torch.equal(state_actual["masks"][n], m) for n, m in state_expected["masks"].items())
    assert state_actual["rows"] == state_expected["rows"] and len(state_actual["rows"]) == 4
    with open(tmp_path / "resumed" / "rounds.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["round"]) for row in rows] == [0, 1, 2, 3]
    assert (tmp_path / "resumed" / "rounds.csv").read_text() == (tmp_path / "straight" / "rounds.csv").read_text()
