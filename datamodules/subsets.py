"""Class-balanced, seeded evaluation subsets, as pure functions of the labels (torch only, no Lightning).

A copy of CIFAR-10 read from an image folder lists its images class by class (all airplanes, then all automobiles,
...), so "the first N test images" is a set of one class. :func:`stratified_subset` instead picks ``size`` positions
with every class represented as evenly as its images allow, the positions inside a class drawn from a CPU generator
seeded with ``seed``: every device, every DDP rank and every rerun gets the same subset without communicating.

:data:`EVAL_SUBSET_SEED` is the seed the evaluation code uses (the images the FGSM / PGD metrics of
:class:`lit_modules.classifier.ResNet18Classifier` attack). It is a constant on purpose, independent of the run's
``seed_everything`` seed, so runs of different seeds and methods are measured on the same images.
"""

from __future__ import annotations

import torch
from torch import Tensor

EVAL_SUBSET_SEED = 0
"""Seed of the evaluation subsets: fixed, so that runs of every seed and method attack the same test images."""


def _class_quotas(counts: list[int], size: int) -> list[int]:
    """Split ``size`` over classes with ``counts`` images as evenly as the counts allow (water-filling).

    Every class gets ``min(count, level)`` images, where ``level`` is the largest value whose total fits in ``size``;
    the ``size - total`` images left over (fewer than the classes that still have images to give) go one each to
    those classes in ascending label order.
    """
    low, high = 0, max(counts, default=0)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(count, mid) for count in counts) <= size:
            low = mid
        else:
            high = mid - 1
    quotas = [min(count, low) for count in counts]
    extra = size - sum(quotas)
    for index, count in enumerate(counts):
        if extra == 0:
            break
        if count > low:
            quotas[index] += 1
            extra -= 1
    return quotas


def stratified_subset(labels: Tensor, size: int, seed: int) -> Tensor:
    """Choose ``size`` positions of ``labels``, class-balanced to within one image per class, reproducibly.

    With ``C`` distinct labels and at least ``ceil(size / C)`` images in every class, each class gets
    ``floor(size / C)`` or ``floor(size / C) + 1`` positions; the classes with an extra one are the lowest labels.
    A class with fewer images than its share gives all of them, and its shortfall is spread over the other classes
    in the same way (water-filling), so the result always has exactly ``size`` positions and the classes that are
    not exhausted still differ by at most one.

    Inside each class the positions are the first ``quota`` of a ``torch.randperm`` of that class's positions, drawn
    in ascending label order from ``torch.Generator().manual_seed(seed)`` on the CPU. The draw does not depend on
    the device, the number of processes or ``size``, so a smaller subset is contained in a larger one of the same
    seed and labels.

    Args:
        labels: ``(N,)`` integer class labels, on any device (read once on the CPU).
        size: Number of positions to choose, in ``[0, N]``.
        seed: Seed of the CPU generator.

    Returns:
        A ``(N,)`` bool CPU tensor, ``True`` at the ``size`` chosen positions.

    Raises:
        ValueError: If ``labels`` is not a 1-D integer tensor, or ``size`` is not an integer in ``[0, N]``.
    """
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must be a 1-D integer tensor, got shape {tuple(labels.shape)} and {labels.dtype}.")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(labels):
        raise ValueError(f"`size` must be an integer in [0, {len(labels)}] (the number of labels), got {size!r}.")
    labels = labels.detach().to("cpu", torch.long)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    if len(labels) == 0:
        return mask
    _, counts = torch.unique(labels, sorted=True, return_counts=True)
    counts_list = counts.tolist()
    quotas = _class_quotas(counts_list, size)
    # Positions grouped by class in ascending label order, each group in position order.
    grouped = torch.argsort(labels, stable=True).split(counts_list)
    generator = torch.Generator().manual_seed(seed)
    for positions, quota in zip(grouped, quotas, strict=True):
        # Drawn for every class, even with quota 0: each class's permutation depends on the seed and counts only.
        order = torch.randperm(len(positions), generator=generator)
        mask[positions[order[:quota]]] = True
    return mask


def rank_share(mask: Tensor, rank: int, world_size: int) -> Tensor:
    """The part of a subset one DDP rank evaluates: the chosen positions ``p`` with ``p % world_size == rank``.

    Unshuffled distributed loaders (:class:`~torch.utils.data.DistributedSampler` with ``shuffle=False``, and
    :class:`datamodules.cifar10.EpochSeededSampler` with ``shuffle=False``) give rank ``r`` the positions ``r``,
    ``r + world_size``, ... and pad the last shards with repeats of the first positions. Keeping only the positions
    a rank owns by this rule drops those repeats, so the ranks together evaluate every chosen position exactly once.
    It also holds when every rank sees the whole set (no distributed sampler).

    Args:
        mask: ``(N,)`` bool subset over positions.
        rank: This process's global rank, in ``[0, world_size)``.
        world_size: Number of processes.

    Returns:
        A ``(N,)`` bool tensor on the device of ``mask``.

    Raises:
        ValueError: If ``rank`` is not in ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be in [0, world_size={world_size}), got {rank}.")
    if world_size == 1:
        return mask
    owned = torch.arange(len(mask), device=mask.device) % world_size == rank
    return mask & owned
