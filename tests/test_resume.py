"""Kill-and-resume: a run killed with SIGKILL and restarted with ``--ckpt_path last`` ends bit-identical (CPU,
deterministic mode) to a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, tiny_overrides


def cli_fit(cifar_dir, root, loader: list[str], *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "cli.py", "fit", "--config", "configs/quickstart_dense.yaml",
        *tiny_overrides(cifar_dir, root, epochs=3),
        "--trainer.deterministic", "true",
        *loader,
        "--trainer.callbacks+=tests.helpers.EpochPruner", "--trainer.callbacks.fraction=0.3",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# Both data paths: a DataLoader with worker processes, and the device-resident loader (on the CPU here).
LOADERS = {
    "dataloader_workers": ["--data.num_workers", "2", "--data.gpu_resident", "false"],
    "resident": ["--data.gpu_resident", "true"],
}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_sigkill_then_resume_matches_the_uninterrupted_run(cifar_dir, tmp_path, loader):
    straight = cli_fit(cifar_dir, tmp_path / "straight", loader)
    assert straight.returncode == 0, straight.stderr[-3000:]

    interrupted_root = tmp_path / "interrupted"
    # 96 images in batches of 16: 6 steps per epoch; step 9 is in the middle of the second epoch.
    killed = cli_fit(cifar_dir, interrupted_root, loader, "--trainer.callbacks+=tests.helpers.SigkillAtStep",
                     "--trainer.callbacks.step=9")  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    resumed = cli_fit(cifar_dir, interrupted_root, loader, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr

    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    actual = torch.load(interrupted_root / "checkpoints" / "last.ckpt", weights_only=False)
    assert actual["global_step"] == expected["global_step"] == 18
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    masks_expected = expected["callbacks"]["EpochPruner"]["masks"]
    masks_actual = actual["callbacks"]["EpochPruner"]["masks"]
    assert all(torch.equal(masks_actual[name], mask) for name, mask in masks_expected.items())
    assert actual["callbacks"]["EpochPruner"]["mask_updates"] == 4
