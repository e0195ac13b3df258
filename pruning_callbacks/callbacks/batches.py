"""The training batches a data-dependent score reads, and the mean over DDP ranks it reduces with.

What :class:`~pruning_callbacks.engine.recipes.MaskRecipe` needs from a trainer, fetched without disturbing the run:
:func:`training_batches` (this rank's first batches, transformed as training transforms them) and
:func:`mean_over_ranks` (one collective for SNIP's and GraSP's per-rank gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from pruning_callbacks.engine.recipes import ReduceFn
from pruning_callbacks.lightning_compat import fit_dataloader_source


def _training_loader(trainer: Trainer) -> Any:
    if trainer.datamodule is not None:
        return trainer.datamodule.train_dataloader()
    # Dataloaders given to fit() directly, or the LightningModule's own train_dataloader().
    loader = fit_dataloader_source(trainer)
    if loader is None:
        raise ValueError("a data-dependent score needs a training dataloader, but the trainer has none.")
    return loader


def _inputs_and_targets(batch: Any) -> tuple[Tensor, Tensor]:
    if (
        not isinstance(batch, (tuple, list))
        or len(batch) < 2
        or not isinstance(batch[0], Tensor)
        or not isinstance(batch[1], Tensor)
    ):
        raise ValueError(
            f"data-dependent scores need training batches of (inputs, targets, ...) tensors, got a "
            f"{type(batch).__name__}."
        )
    return batch[0], batch[1]


def training_batches(trainer: Trainer, num_batches: int) -> list[tuple[Tensor, Tensor]]:
    """The first ``num_batches`` training batches of this rank, moved and transformed exactly as training does.

    The batches come from ``trainer.datamodule.train_dataloader()`` (or the dataloaders given to ``fit``) and go
    through ``trainer.strategy.batch_to_device``, which runs ``transfer_batch_to_device`` and
    ``on_after_batch_transfer`` (for :class:`~datamodules.CIFAR10DataModule`: the epoch's crop and flip, then
    normalization). The global random state is left as it was, so fetching them changes nothing else in the run.

    Args:
        trainer: The trainer, inside ``fit`` (e.g. in ``on_fit_start``).
        num_batches: How many batches to take (fewer if the loader is shorter).

    Returns:
        ``(inputs, targets)`` pairs on the training device.

    Raises:
        ValueError: If there is no training dataloader, it is empty, or its batches are not ``(inputs, targets,
            ...)`` sequences.
    """
    loader = _training_loader(trainer)
    if isinstance(loader, (Mapping, list, tuple)):
        raise ValueError("data-dependent scores need one training dataloader, got a collection of them.")
    batches: list[tuple[Tensor, Tensor]] = []
    # A DataLoader draws its workers' base seed from the global generator when an iterator starts.
    with torch.random.fork_rng(devices=[]):
        iterator = iter(loader)
        for _ in range(num_batches):
            batch = next(iterator, None)
            if batch is None:
                break
            batches.append(_inputs_and_targets(trainer.strategy.batch_to_device(batch, dataloader_idx=0)))
        del iterator
    if not batches:
        raise ValueError("data-dependent scores need training batches, but the training dataloader is empty.")
    if len(batches) < num_batches:
        rank_zero_warn(f"asked for {num_batches} training batches to score with; the loader has only {len(batches)}.")
    return batches


def mean_over_ranks(trainer: Trainer) -> ReduceFn | None:
    """A function that averages a list of tensors over the DDP ranks in one collective, or ``None`` on one process.

    Args:
        trainer: The trainer whose strategy reduces (``trainer.strategy.reduce``, mean).
    """
    if trainer.world_size <= 1:
        return None
    strategy = trainer.strategy

    def reduce(tensors: Sequence[Tensor]) -> list[Tensor]:
        flat = torch.cat([tensor.detach().reshape(-1) for tensor in tensors])
        flat = strategy.reduce(flat, reduce_op="mean")
        pieces = flat.split([tensor.numel() for tensor in tensors])
        return [piece.view(tensor.shape).to(tensor.dtype) for piece, tensor in zip(pieces, tensors, strict=True)]

    return reduce
