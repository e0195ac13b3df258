"""ScheduledPruning: Zhu & Gupta's cubic schedule by hand, exact sparsity at every update, one-shot, GMP's config,
and a kill in the middle of the schedule resumed bit-identically."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
from lightning.pytorch import Callback

from pruning_callbacks import ScheduledPruning
from pruning_callbacks.engine.distributions import layer_keep_counts
from tests.helpers import REPO, tiny_overrides
from tests.test_dynamic import MLP, fit


class SparsitySpy(Callback):
    """Records each layer's remaining weights after every optimizer step."""

    def __init__(self, pruner: ScheduledPruning) -> None:
        self.pruner = pruner
        self.after_step: dict[int, dict[str, int]] = {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        params = self.pruner.parameters
        self.after_step[trainer.global_step] = {name: int(p.count_nonzero()) for name, p in params.items()}


def test_zhu_gupta_cubic_schedule_by_hand():
    pruner = ScheduledPruning(final_sparsity=0.8, begin=0.1, end=0.5, update_every=10)
    pruner.steps = (10, 50)
    from pruning_callbacks.engine.schedules import Polynomial

    pruner.schedule = Polynomial(0.0, 0.8, 10, 50, 10, 3.0)
    # s_t = 0.8 (1 - (1 - (t - 10) / 40)^3)
    for step, expected in ((10, 0.0), (20, 0.8 * (1 - 0.75**3)), (30, 0.8 * (1 - 0.5**3)), (50, 0.8), (60, 0.8)):
        assert pruner.sparsity_at(step) == pytest.approx(expected, abs=1e-12)
    assert [step for step in range(0, 70) if pruner.is_update_step(step)] == [20, 30, 40, 50]  # 0 at step 10: skipped


def test_every_update_hits_the_schedule_exactly_per_layer_and_masks_only_shrink():
    pruner = ScheduledPruning(final_sparsity=0.9, begin=0.1, end=0.5, update_every=4, log_chart=False)
    spy = SparsitySpy(pruner)
    fit([pruner, spy], max_epochs=4)  # 10 steps an epoch: 40 steps; updates at 4 + 4k up to 20
    assert pruner.steps == (4, 20) and pruner.last_update_step == 20
    shapes = {name: p.shape for name, p in pruner.parameters.items()}
    total = sum(p.numel() for p in pruner.parameters.values())
    previous = {name: p.numel() for name, p in pruner.parameters.items()}
    for step in range(1, 41):
        # A mask set before the optimizer step of global step t (an update step) holds from then on.
        last_update = max((u for u in range(8, 21, 4) if u <= step - 1), default=None)
        target = 0.0 if last_update is None else pruner.sparsity_at(last_update)
        expected = layer_keep_counts("uniform", shapes, target)  # every layer at s_t, as the engine counts
        assert sum(expected.values()) == round((1 - target) * total)  # exactly the schedule's sparsity overall
        assert spy.after_step[step] == expected, step
        assert all(spy.after_step[step][name] <= previous[name] for name in previous)  # masks only shrink
        previous = spy.after_step[step]
    assert pruner.masks.sparsity() == pytest.approx(0.9, abs=1e-3)


def test_begin_equal_to_end_prunes_once():
    pruner = ScheduledPruning(final_sparsity=0.5, begin=0.5, end=0.5, log_chart=False)
    spy = SparsitySpy(pruner)
    fit([pruner, spy], max_epochs=2)  # 20 steps: one update at step 10
    assert pruner.steps == (10, 10) and pruner.mask_updates == 2  # the dense start, then the one update
    assert all(
        count == p.numel()
        for (name, p), count in zip(pruner.parameters.items(), spy.after_step[10].values(), strict=True)
    )
    assert spy.after_step[11] == {name: p.numel() - round(0.5 * p.numel()) for name, p in pruner.parameters.items()}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"final_sparsity": 0.0}, r"final_sparsity must be in \(0, 1\)"),
        ({"final_sparsity": 0.5, "initial_sparsity": 0.6}, r"initial_sparsity must be in \[0, 0.5\]"),
        ({"final_sparsity": 0.5, "begin": 0.6, "end": 0.5}, r"end must be in \[0.6, 1\]"),
        ({"final_sparsity": 0.5, "update_every": 0}, "update_every must be an integer >= 1"),
        ({"final_sparsity": 0.5, "score": "snip"}, "data-free scores"),
        ({"final_sparsity": 0.5, "power": 0}, "power must be a finite number > 0"),
    ],
)
def test_bad_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScheduledPruning(**kwargs)


def test_a_run_too_short_for_one_update_is_refused():
    with pytest.raises(ValueError, match="leave no update of every 100 steps"):
        fit([ScheduledPruning(final_sparsity=0.5, update_every=100, log_chart=False)], max_epochs=1, model=MLP())


def test_gmp_config_kill_in_the_middle_of_the_schedule_resumes_bit_identically(cifar_dir, tmp_path):
    # 2 epochs of 6 steps; updates every 2 steps from step 0 to 8 (end 0.75); killed at step 5, resumed from the
    # mid-epoch save at step 4, between the updates of steps 4 and 6.
    def command(root, *extra):
        return [sys.executable, "cli.py", "fit", "--config", "configs/gmp.yaml", *tiny_overrides(cifar_dir, root, 2),
                "--trainer.callbacks.update_every", "2", "--trainer.callbacks.begin", "0",
                "--trainer.callbacks.end", "0.75", "--trainer.deterministic", "true", "--model.lr_scheduler", "cosine",
                "--autosave.every_n_steps", "4", *extra]  # fmt: skip

    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    straight = subprocess.run(command(tmp_path / "straight"), cwd=REPO, env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = subprocess.run(
        command(tmp_path / "killed", "--trainer.callbacks+=tests.helpers.SigkillAtStep", "--trainer.callbacks.step=5"),
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = subprocess.run(command(tmp_path / "killed"), cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == 12
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    state, resumed_state = expected["callbacks"]["ScheduledPruning"], actual["callbacks"]["ScheduledPruning"]
    assert state["steps"] == resumed_state["steps"] == [0, 8] and state["last_update_step"] == 8
    for name, mask in state["masks"].items():
        assert torch.equal(resumed_state["masks"][name], mask), name
    remaining = sum(int(m.sum()) for m in state["masks"].values())
    total = sum(m.numel() for m in state["masks"].values())
    assert total - remaining == sum(round(0.9 * m.numel()) for m in state["masks"].values())  # exactly 90% per layer
