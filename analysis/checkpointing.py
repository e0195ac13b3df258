"""Checkpoints a dropped session cannot corrupt or lose: atomic writes, mid-epoch saves, a save on SIGTERM.

* :class:`AtomicCheckpointIO` writes every checkpoint through a temporary file in the same folder, fsyncs it and
  renames it in place, so a write killed halfway leaves the previous checkpoint intact (Lightning's own writer opens
  the destination directly).
* :class:`AutoSave` writes ``checkpoints/last.ckpt`` in the middle of an epoch, every ``every_minutes`` of training
  (and every ``every_n_steps`` optimizer steps if set), and when training is stopped by SIGTERM (a cluster's
  pre-emption, a closing notebook) or Ctrl-C. The data order is a pure function of (seed, epoch, position), so a run
  resumed from such a checkpoint continues with the next batch, bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from pruning_callbacks.engine.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes are atomic (temporary file, fsync, rename) and readable by others (0644)."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)


class AutoSave(Checkpoint):
    """Save ``last.ckpt`` mid-epoch on a timer, every N steps, and on SIGTERM or Ctrl-C.

    It is a ``Checkpoint`` callback, so Lightning runs it after every other callback's ``on_train_batch_end``: the
    state it saves includes what they did for the batch. Under DDP the timer's decision is rank 0's, shared with
    every rank (one small collective every ``check_every_n_steps`` steps).

    Args:
        every_minutes: Minutes of training between saves; ``None`` or 0 turns the timer off.
        every_n_steps: Also save every this many optimizer steps; ``None`` turns it off.
        on_signal: Save when training stops on SIGTERM (every rank) or Ctrl-C (one process).
        check_every_n_steps: How often the timer is looked at.

    Raises:
        ValueError: If an interval is negative or ``check_every_n_steps`` is not positive.
    """

    def __init__(
        self,
        every_minutes: float | None = 10.0,
        every_n_steps: int | None = None,
        on_signal: bool = True,
        check_every_n_steps: int = 10,
    ) -> None:
        if every_minutes is not None and not every_minutes >= 0:
            raise ValueError(f"every_minutes must be >= 0 or null, got {every_minutes!r}")
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive integer or null, got {every_n_steps!r}")
        if isinstance(check_every_n_steps, bool) or check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be a positive integer, got {check_every_n_steps!r}")
        self.every_minutes = every_minutes or None
        self.every_n_steps = every_n_steps
        self.on_signal = on_signal
        self.check_every_n_steps = check_every_n_steps
        self._started = time.monotonic()
        self._saved_step: int | None = None

    def last_path(self, trainer: Trainer) -> Path:
        """``<checkpoint dir>/last.ckpt``: where the epoch-end checkpoint also writes it."""
        callback = trainer.checkpoint_callback
        folder = callback.dirpath if isinstance(callback, ModelCheckpoint) and callback.dirpath else None
        if folder is None:
            folder = os.path.join(trainer.default_root_dir, "checkpoints")
        return Path(folder) / "last.ckpt"

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.monotonic()

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step
        due = self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0
        if self.every_minutes is not None and step % self.check_every_n_steps == 0:
            timer = time.monotonic() - self._started >= 60.0 * self.every_minutes
            if trainer.world_size > 1:
                timer = bool(trainer.strategy.broadcast(timer, src=0))
            due = due or timer
        if due and self._saved_step != step:
            self._save(trainer, "mid-epoch")
            self._started = time.monotonic()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not self.on_signal or not trainer.training or trainer.sanity_checking:
            return
        if isinstance(exception, SIGTERMException) or (
            isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1
        ):
            self._save(trainer, "on " + ("SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"))

    def _save(self, trainer: Trainer, why: str) -> None:
        path = self.last_path(trainer)
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        rank_zero_info(f"Saved {path} {why} (epoch {trainer.current_epoch}, step {trainer.global_step}).")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {}
