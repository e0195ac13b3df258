"""Every access to Lightning internals, one function each (Lightning 2.4 to 2.6).

Public Lightning APIs cover almost everything this project needs; the few places that need more go through here, so
that a Lightning upgrade has one module to check. ``tests/test_lightning_compat.py`` pins the behaviour.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer


def fit_position(trainer: Trainer) -> tuple[int, int]:
    """``(epoch, batches already done in it)`` the fit loop is about to train from.

    Right after a checkpoint is restored this is where the resumed run continues: for a checkpoint written at the
    end of an epoch ``(next epoch, 0)``; for one written in the middle of an epoch (after a batch), ``(that epoch,
    batches it had finished)``, replicating how Lightning's training-epoch loop restarts
    (``_TrainingEpochLoop.update_restart_stage`` / ``reset``). During a run, ``(current epoch, 0)`` at an epoch's
    start.

    Args:
        trainer: The trainer, inside ``fit``.
    """
    loop = trainer.fit_loop
    epochs = loop.epoch_progress.current
    epoch = epochs.processed
    if epochs.started <= epochs.processed:
        return epoch, 0
    progress = loop.epoch_loop.batch_progress
    total = progress.total
    done = progress.current.completed
    if total.started == total.ready and total.processed == total.started and total.completed == total.processed - 1:
        done += 1  # saved in on_train_batch_end: Lightning counts that batch as completed when it restarts
    return epoch, done


def should_log_this_step(trainer: Trainer) -> bool:
    """Whether Lightning writes ``self.log(on_step=True)`` values at this step (``log_every_n_steps``)."""
    return bool(trainer._logger_connector.should_update_logs)


def fit_dataloader_source(trainer: Trainer) -> Any:
    """The training dataloader given to ``fit`` directly or by the module's ``train_dataloader`` (or ``None``).

    No public accessor exists before the fit loop has set up its data.
    """
    source = trainer.fit_loop._data_source
    return source.dataloader() if source.is_defined() else None


def transfer_batch(pl_module: LightningModule, batch: Any) -> Any:
    """Move an evaluation batch to the module's device and apply the datamodule's ``on_after_batch_transfer``."""
    return pl_module._apply_batch_transfer_handler(batch)


def attached_trainer(pl_module: LightningModule) -> Trainer | None:
    """The trainer a module is attached to, or ``None`` (``pl_module.trainer`` raises when there is none)."""
    return pl_module._trainer
