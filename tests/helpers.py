"""Test-only callbacks and helpers (importable by subprocess scripts as ``tests.helpers``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from pruning_callbacks import MaskedTraining
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import ScoreContext, compute_scores
from pruning_callbacks.engine.seeding import derive_seed
from pruning_callbacks.engine.selection import prune_fraction, prune_to_sparsity

REPO = Path(__file__).resolve().parents[1]


class EpochPruner(MaskedTraining):
    """A minimal method on the base callback: prune ``fraction`` of the remaining weights at every epoch end.

    With ``rank_dependent_init`` the initial random masks are drawn with a different seed on every rank, so a DDP
    test can check that the base callback makes the ranks agree.
    """

    def __init__(
        self,
        fraction: float = 0.2,
        score: str = "magnitude",
        scope: str = "global",
        initial_sparsity: float = 0.3,
        rank_dependent_init: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.fraction = fraction
        self.score = score
        self.scope = scope
        self.initial_sparsity = initial_sparsity
        self.rank_dependent_init = rank_dependent_init

    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        dense = Masks.dense(self.parameters)
        rank = trainer.global_rank if self.rank_dependent_init else 0
        context = ScoreContext(self.parameters, dense, seed=derive_seed(self.seed, "init", rank))
        return prune_to_sparsity(compute_scores("random", context), dense, self.initial_sparsity, scope="global")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        assert self.masks is not None
        context = ScoreContext(self.parameters, self.masks, seed=derive_seed(self.seed, "epoch", trainer.current_epoch))
        scores = compute_scores(self.score, context)
        self.set_masks(trainer, pl_module, prune_fraction(scores, self.masks, self.fraction, self.scope))


class SigkillAtStep(Callback):
    """Kill the process with SIGKILL after optimizer step ``step``, like a dropped Colab session."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermAtStep(Callback):
    """Send SIGTERM once after optimizer step ``step``, like a pre-emption or a closing notebook.

    ``group: true`` signals the whole process group, DataLoader workers included, as SLURM's ``scancel`` and a
    terminal's Ctrl-C do; start the process in a session of its own then.
    """

    def __init__(self, step: int, group: bool = False) -> None:
        self.step = step
        self.group = group
        self.sent = False

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            if self.group:
                os.killpg(os.getpgid(0), signal.SIGTERM)
            else:
                os.kill(os.getpid(), signal.SIGTERM)


QUIET_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
"""A one-process CPU Trainer that writes nothing and prints no bar or summary: what most callback tests fit with."""


def quiet_trainer(root: Path | None = None, callbacks: Sequence[Callback] = (), **kwargs: Any) -> Trainer:
    """A :data:`QUIET_TRAINER` in ``root`` (``default_root_dir``) with ``callbacks``; ``kwargs`` override."""
    settings: dict[str, Any] = {**QUIET_TRAINER, "callbacks": list(callbacks)}
    if root is not None:
        settings["default_root_dir"] = root
    return Trainer(**{**settings, **kwargs})


def tiny_overrides(data_dir: Path, root_dir: Path, epochs: int = 1) -> list[str]:
    """Command-line overrides that shrink any config to a CPU run of a few seconds on synthetic data."""
    return [
        "--data.data_dir", str(data_dir),
        "--data.train_subset", "96",
        "--data.val_size", "32",
        "--data.batch_size", "16",
        "--data.eval_batch_size", "64",
        "--data.num_workers", "0",
        "--data.download", "false",
        "--model.width", "4",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.precision", "32-true",
        "--trainer.max_epochs", str(epochs),
        "--trainer.default_root_dir", str(root_dir),
        "--trainer.enable_progress_bar", "false",
        "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip


def run_two_rank_script(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``tests/<script>`` as a 2-process CPU DDP job (Lightning launches the second rank), one thread per rank.

    Returns:
        The finished process; the caller asserts on its return code and on the files the script wrote.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",  # two ranks on two cores: no oversubscription
    }
    command = [sys.executable, str(REPO / "tests" / script), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
