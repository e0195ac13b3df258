"""Test-only helpers for 2-rank DDP runs of ``cli.py`` (importable by the spawned ranks as ``tests.ddp_helpers``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from pruning_callbacks import MaskedTraining
from tests.helpers import REPO, quiet_trainer

RANK_STATE_DIR = "rank_state"
"""Folder of the run directory where :class:`DumpRankState` writes ``<stage>_rank<r>.pt``."""


class DumpRankState(Callback):
    """At the end of ``fit`` and ``test``, every rank saves its masks, weights and step to a file named by its rank.

    Writes ``<default_root_dir>/rank_state/<stage>_rank<global_rank>.pt`` (``trainer.default_root_dir`` is a plain
    attribute, not a collective, so asking it on every rank separately is safe).
    """

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._dump(trainer, pl_module, "fit")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._dump(trainer, pl_module, "test")

    @staticmethod
    def _dump(trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        method = next((cb for cb in trainer.callbacks if isinstance(cb, MaskedTraining)), None)
        masks = method.masks if method is not None else None
        state = {
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "masks": {name: mask.detach().cpu() for name, mask in masks.items()} if masks is not None else None,
            "regrowth_updates": getattr(method, "regrowth_updates", None),
            "weights": {name: value.detach().cpu().clone() for name, value in pl_module.state_dict().items()},
        }
        folder = Path(trainer.default_root_dir) / RANK_STATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / f"{stage}_rank{trainer.global_rank}.pt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``python cli.py ARGS`` from the repository root, one thread per process, under a wall-clock timeout.

    With ``--trainer.strategy ddp --trainer.devices 2`` Lightning launches the second rank by running the same
    command again; ``MASTER_ADDR`` / ``MASTER_PORT`` point both at a free local port. A hang is killed at
    ``timeout`` (the whole process group, so no rank is left behind) and raises ``subprocess.TimeoutExpired``.
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",  # two ranks on two cores: no oversubscription
    }
    env.pop("LOCAL_RANK", None)
    env.pop("NODE_RANK", None)
    command = [sys.executable, str(REPO / "cli.py"), *args]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=output) from None
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def ddp_fit(
    callback: Callback, data_dir: str, max_epochs: int = 2, val_size: int = 32, train_subset: int = 96
) -> tuple[Trainer, LightningModule]:
    """Inside a spawned rank: fit a width-4 ResNet18 with ``callback`` under 2-rank CPU DDP on ``data_dir``.

    What the three DDP test scripts share. The caller seeds first (``seed_everything(0)``), so both ranks build the
    same model and data.
    """
    from datamodules import CIFAR10DataModule
    from lit_modules import ResNet18Classifier

    trainer = quiet_trainer(None, [callback], devices=2, strategy="ddp", max_epochs=max_epochs)
    model = ResNet18Classifier(width=4)
    data = CIFAR10DataModule(
        data_dir, batch_size=16, val_size=val_size, train_subset=train_subset, num_workers=0, download=False
    )
    trainer.fit(model, datamodule=data)
    return trainer, model
