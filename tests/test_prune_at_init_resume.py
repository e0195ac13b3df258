"""Kill-and-resume through the CLI with configs/snip.yaml: the resumed run restores the SNIP mask it started with
(it does not score the trained weights again) and ends bit-identical to an uninterrupted run, Early-Bird state
included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from cli import main
from pruning_callbacks import PruneAtInit
from tests.helpers import REPO, tiny_overrides


def arguments(cifar_dir, root, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(REPO / "configs" / "snip.yaml"),
        *tiny_overrides(cifar_dir, root, epochs=2),
        "--data.gpu_resident", "true",
        "--trainer.callbacks+=pruning_callbacks.EarlyBird", "--trainer.callbacks.target_sparsity=0.5",
        "--trainer.callbacks.granularity=unstructured",
        "--trainer.callbacks.window=2", "--trainer.callbacks.threshold=0.5",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def one_thread():
    """Every run of this test on one thread: bit-identity needs equal thread counts, and on a busy 2-core machine
    one thread per process avoids OpenMP oversubscription (which slows these tiny runs down tenfold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_sigkill_then_resume_keeps_the_initial_snip_mask_and_matches_the_uninterrupted_run(
    cifar_dir, tmp_path, monkeypatch, one_thread
):
    straight = main(arguments(cifar_dir, tmp_path / "straight"))
    assert straight.trainer.global_step == 12

    interrupted_root = tmp_path / "interrupted"
    # 96 images in batches of 16: 6 steps per epoch; step 9 is in the middle of the second epoch.
    killed = subprocess.run(
        [sys.executable, "cli.py", *arguments(cifar_dir, interrupted_root),
         "--trainer.callbacks+=tests.helpers.SigkillAtStep", "--trainer.callbacks.step=9"],
        cwd=REPO, env=one_thread, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "PruneAtInit: snip (global, 1 iteration) mask at sparsity 0.9000 computed in" in killed.stderr
    before_resume = torch.load(interrupted_root / "checkpoints" / "last.ckpt", weights_only=True)
    assert before_resume["global_step"] == 6

    def must_not_prune_again(*args: object) -> None:
        pytest.fail("the resumed run computed the mask again instead of restoring it")

    monkeypatch.setattr(PruneAtInit, "initial_masks", must_not_prune_again)
    resumed = main(arguments(cifar_dir, interrupted_root, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 12

    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(interrupted_root / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    masks = actual["callbacks"]["PruneAtInit"]["masks"]
    for name, mask in expected["callbacks"]["PruneAtInit"]["masks"].items():
        assert torch.equal(masks[name], mask), name
        assert torch.equal(before_resume["callbacks"]["PruneAtInit"]["masks"][name], mask), name
    assert actual["callbacks"]["PruneAtInit"]["mask_updates"] == 1
    assert expected["callbacks"]["PruneAtInit"]["mask_updates"] == 1
    early_bird = actual["callbacks"]["EarlyBird"]
    reference = expected["callbacks"]["EarlyBird"]
    assert early_bird["distances"] == reference["distances"] and len(reference["distances"]) == 1
    assert early_bird["found_epoch"] == reference["found_epoch"] == 1 and early_bird["last_epoch"] == 1
    assert len(early_bird["window_masks"]) == len(reference["window_masks"]) == 2
    for saved, expected_masks in zip(early_bird["window_masks"], reference["window_masks"], strict=True):
        for name, mask in expected_masks.items():
            assert torch.equal(saved[name], mask), name
