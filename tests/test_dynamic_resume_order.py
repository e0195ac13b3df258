"""Kill-and-resume of configs/rigl.yaml through the CLI with DataLoader workers (the default ``num_workers 2``).

RigL places ``T_end`` from ``trainer.estimated_stepping_batches``, which builds the train dataloader. Asked for in
``on_fit_start``, before Lightning restores the loop counters of a resumed run, it built the loader and its first
iterator at epoch 0: workers prefetch their indices as soon as the iterator exists, so the resumed epoch trained on
epoch 0's order and the run no longer matched an uninterrupted one (with ``num_workers 0`` the sampler is read
lazily and it did). The schedule is now built in ``on_train_start``, after the fit loop set up its data at the
resumed epoch; this test holds the weights, masks and schedule to bit-identity with workers on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import main
from pruning_callbacks.engine.masks import Masks
from tests.helpers import REPO, tiny_overrides


@pytest.fixture
def one_thread() -> dict[str, str]:
    """One thread in this process and in the killed one: bit-identity needs equal thread counts, and on a busy
    2-core machine one thread per process avoids OpenMP oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


@pytest.fixture
def restore_deterministic_algorithms() -> None:
    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)


def arguments(cifar_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(REPO / "configs" / "rigl.yaml"),
        *tiny_overrides(cifar_dir, root, epochs=2),
        "--data.num_workers", "2",  # the config's default; tiny_overrides sets 0
        "--trainer.deterministic", "true",
        "--trainer.callbacks.update_every", "2",
        "--trainer.callbacks.log_chart", "false",
        *extra,
    ]  # fmt: skip


def test_sigkill_then_resume_with_dataloader_workers_matches_the_uninterrupted_run(
    cifar_dir, tmp_path, one_thread, restore_deterministic_algorithms
):
    # 96 images in batches of 16: 6 steps per epoch, 12 in all; T_end = floor(0.75 * 12) = 9, updates at steps 2, 4,
    # 6 and 8. The kill after step 8 leaves last.ckpt at the end of epoch 0 (step 6): the resumed run trains epoch 1,
    # whose order differs from epoch 0's, and makes the updates at 6 and 8 again from it.
    straight = main(arguments(cifar_dir, tmp_path / "straight"))
    assert straight.trainer.global_step == 12 and straight.datamodule.num_workers == 2

    interrupted = tmp_path / "interrupted"
    killed = subprocess.run(
        [sys.executable, "cli.py", *arguments(cifar_dir, interrupted),
         "--trainer.callbacks+=tests.helpers.SigkillAtStep", "--trainer.callbacks.step=8"],
        cwd=REPO, env=one_thread, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6

    resumed = main(arguments(cifar_dir, interrupted, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 12
    # The resumed epoch's sampler started at that epoch, not at 0.
    assert resumed.datamodule._train_sampler.epoch == 1

    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == 12
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    state_expected, state_actual = expected["callbacks"]["RigL"], actual["callbacks"]["RigL"]
    assert Masks(state_actual["masks"]) == Masks(state_expected["masks"])
    assert state_actual["mask_updates"] == state_expected["mask_updates"] == 5
    regrowth_expected, regrowth_actual = state_expected["regrowth"], state_actual["regrowth"]
    assert regrowth_actual["end_step"] == regrowth_expected["end_step"] == 9
    assert regrowth_actual["updates"] == regrowth_expected["updates"] == 4
    assert regrowth_actual["last_update_step"] == regrowth_expected["last_update_step"] == 8
    assert Masks(regrowth_actual["previous_grown"]) == Masks(regrowth_expected["previous_grown"])
    for index, state in expected["optimizer_states"][0]["state"].items():
        assert torch.equal(actual["optimizer_states"][0]["state"][index]["momentum_buffer"], state["momentum_buffer"])
