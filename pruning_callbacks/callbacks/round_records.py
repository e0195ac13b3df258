"""What a multi-round run leaves behind: per-round accuracy, ``rounds.csv``, the round masks and the rewind weights.

:class:`~pruning_callbacks.IterativePruning` decides when a round ends; this module measures it
(:func:`evaluate_accuracy`), publishes it (:func:`publish_rounds`: ``round/*`` metrics, a TensorBoard chart and
``rounds.csv``, rewritten atomically from the callback's saved rows so that a crash never loses or duplicates one)
and keeps every round's masks where another run's ``masks_from`` reads them (:func:`load_round_masks`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from pruning_callbacks.engine.io import atomic_torch_save, atomic_write_text
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.lightning_compat import transfer_batch

ROUND_MASKS_DIR = "round_masks"
"""Folder of the run directory where every round's masks are saved (``round<r>.pt``), for ``masks_from``."""
ROUND_COLUMNS = ("round", "epoch", "sparsity", "remaining_weights", "val_acc", "test_acc")
"""The columns of ``rounds.csv``, one row per round."""


@torch.no_grad()
def evaluate_accuracy(trainer: Trainer, pl_module: LightningModule, split: str) -> float | None:
    """Top-1 accuracy of the current weights on the datamodule's ``val`` or ``test`` split (every rank alike).

    Args:
        trainer: The trainer, inside ``fit``; its precision plugin's forward context is used.
        pl_module: The model.
        split: ``val`` or ``test``.

    Returns:
        The accuracy over the whole split, or ``None`` without a datamodule or without that split.
    """
    datamodule = trainer.datamodule
    if datamodule is None:
        return None
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    if isinstance(loader, (list, tuple)):
        # Extra test loaders (an OOD set) come after the split itself.
        loader = loader[0] if loader else None
    if not loader:
        return None
    was_training = pl_module.training
    pl_module.eval()
    correct = torch.zeros((), dtype=torch.long, device=pl_module.device)
    total = 0
    with trainer.precision_plugin.forward_context():
        for batch in loader:
            images, labels = transfer_batch(pl_module, batch)[:2]
            correct += (pl_module(images).argmax(dim=-1) == labels).sum()
            total += labels.numel()
    pl_module.train(was_training)
    # Sharded loaders give each rank a part, unsharded ones the whole set: summing both counts is right either way.
    counts = trainer.strategy.reduce(
        torch.stack([correct, torch.tensor(total, device=correct.device)]).double(), reduce_op="sum"
    )
    return float(counts[0] / counts[1]) if counts[1] > 0 else None


def round_row(
    trainer: Trainer, pl_module: LightningModule, round_index: int, masks: Masks, val_acc: float | None, test: bool
) -> dict[str, Any]:
    """The ``rounds.csv`` row of the round that just ended (columns :data:`ROUND_COLUMNS`).

    Args:
        trainer: The trainer.
        pl_module: The model.
        round_index: The round.
        masks: Its masks.
        val_acc: Its validation accuracy, if measured.
        test: Also measure test accuracy (needs a datamodule with a test set).
    """
    return {
        "round": round_index,
        "epoch": trainer.current_epoch,
        "sparsity": masks.sparsity(),
        "remaining_weights": masks.remaining(),
        "val_acc": val_acc,
        "test_acc": evaluate_accuracy(trainer, pl_module, "test") if test else None,
    }


def publish_rounds(trainer: Trainer, owner: str, rows: Sequence[Mapping[str, Any]], log_chart: bool = True) -> None:
    """Announce the newest round: print it, log its ``round/*`` metrics and chart, and rewrite ``rounds.csv``.

    Args:
        trainer: The trainer (every rank calls this: asking for the log directory is a collective under DDP).
        owner: The callback's name, for the printed line and the chart's title.
        rows: Every round so far, the newest last, with the keys of :data:`ROUND_COLUMNS`.
        log_chart: Also draw accuracy against remaining weights in TensorBoard (from the second round on).
    """
    row = rows[-1]
    rank_zero_info(
        f"{owner}: round {row['round']} done: sparsity {row['sparsity']:.4f}, "
        f"val/acc {fmt(row['val_acc'])}, test/acc {fmt(row['test_acc'])}"
    )
    log_dir = trainer.log_dir  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return
    metrics = {f"round/{key}": float(value) for key, value in row.items() if value is not None}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        if log_chart and isinstance(logger, TensorBoardLogger) and len(rows) > 1:
            from pruning_callbacks.callbacks.plotting import rounds_figure

            figure = rounds_figure(rows, title=f"{owner}: accuracy after each round")
            logger.experiment.add_figure("round/accuracy_vs_weights", figure, global_step=trainer.global_step)
    if log_dir is not None:
        atomic_write_text(os.path.join(log_dir, "rounds.csv"), rounds_csv(rows))


def save_in_log_dir(trainer: Trainer, state: Mapping[str, Any], relative_path: str) -> None:
    """Save ``state`` atomically under the run's log directory, from rank 0 (every rank calls this)."""
    log_dir = trainer.log_dir  # a collective under DDP: every rank asks
    if trainer.is_global_zero and log_dir is not None:
        atomic_torch_save(dict(state), os.path.join(log_dir, relative_path))


def load_round_masks(
    masks_from: str, round_index: int, params: Mapping[str, nn.Parameter], expected_pruned: int, owner: str
) -> Masks:
    """The masks another multi-round run saved for round ``round_index``, checked against this run.

    Args:
        masks_from: That run's directory, or its ``round_masks`` folder.
        round_index: The round (>= 1).
        params: This run's prunable parameters, which the masks must fit.
        expected_pruned: How many weights this run's schedule prunes in that round; the masks must prune as many.
        owner: The callback's name, for the printed line.

    Raises:
        ValueError: If the file is missing, does not fit the parameters, or prunes another number of weights.
    """
    folder = masks_from
    if os.path.basename(os.path.normpath(folder)) != ROUND_MASKS_DIR:
        folder = os.path.join(folder, ROUND_MASKS_DIR)
    path = os.path.join(folder, f"round{round_index}.pt")
    if not os.path.isfile(path):
        saved = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        raise ValueError(
            f"masks_from has no masks for round {round_index}: {path} does not exist (found: "
            f"{', '.join(saved) or 'nothing'}); give the run directory of a run that reached this round"
        )
    masks = Masks.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    try:
        masks.check_compatible({name: param.shape for name, param in params.items()})
    except ValueError as error:
        raise ValueError(f"masks_from {path} does not fit the model: {error}") from None
    if masks.total - masks.remaining() != expected_pruned:
        raise ValueError(
            f"masks_from {path} prunes {masks.total - masks.remaining()} of {masks.total} weights, but round "
            f"{round_index} of this run's schedule prunes {expected_pruned}; use the same rounds and prune_fraction"
        )
    rank_zero_info(f"{owner}: round {round_index} takes its masks from {path}")
    return masks


def fmt(value: float | None) -> str:
    """A metric with four decimals, or ``n/a`` for a missing or NaN one."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def rounds_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-round results as CSV text with the columns of :data:`ROUND_COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROUND_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in ROUND_COLUMNS})
    return buffer.getvalue()


def format_rounds(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-round results as a Markdown table."""
    lines = ["| round | sparsity | remaining weights | val/acc | test/acc |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['round']} | {row['sparsity']:.4f} | {row['remaining_weights']:,} | {fmt(row['val_acc'])} | "
            f"{fmt(row['test_acc'])} |"
        )
    return "\n".join(lines)
