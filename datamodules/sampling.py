"""The seeded, resumable sampling of CIFAR-10: the epoch order, the GPU-resident loader, and indexed test batches.

The shuffle order is a pure function of ``(seed, epoch)`` (:class:`EpochSeededSampler`), shared by every rank and
every number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler
from typing_extensions import override

from pruning_callbacks.engine.seeding import generator as seeded_generator


class EpochSeededSampler(DistributedSampler):
    """A DistributedSampler whose order is a pure function of ``(seed, epoch)``.

    The permutation of one epoch is drawn from ``seeded_generator(seed, "shuffle", epoch)`` on the CPU and
    sharded exactly like :class:`~torch.utils.data.DistributedSampler` (padded with
    the first indices to a multiple of ``num_replicas``, then every ``num_replicas``-th index from ``rank``).
    Because it is a ``DistributedSampler``, Lightning neither replaces nor wraps it under DDP, and it calls
    :meth:`set_epoch` at the start of every epoch.

    Args:
        dataset_size: Number of samples to draw from.
        seed: The run seed.
        shuffle: Shuffle every epoch; ``False`` yields ``0..dataset_size-1`` sharded by rank.
        num_replicas: Number of DDP processes.
        rank: This process's global rank.

    Raises:
        ValueError: If ``dataset_size`` is not positive or ``rank`` is not in ``[0, num_replicas)``.
    """

    def __init__(
        self, dataset_size: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if dataset_size < 1:
            raise ValueError(f"`dataset_size` must be >= 1, got {dataset_size}.")
        super().__init__(
            range(dataset_size),  # type: ignore[arg-type]  # only its length is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.dataset_size = dataset_size
        self._resume: tuple[int, int] | None = None

    def resume_within_epoch(self, epoch: int, skip: int) -> None:
        """Make iteration over ``epoch`` start after its first ``skip`` samples (of this rank).

        A run resumed from a checkpoint written in the middle of an epoch continues with the next batch: the order
        is a pure function of ``(seed, epoch)``, so resuming is a skip, not a replay. ``len()`` stays the length
        of the whole epoch, as Lightning counts the resumed epoch's batches from where it stopped. Other epochs
        are not affected.

        Args:
            epoch: The epoch being resumed.
            skip: Samples of this rank's order already trained on in it (batches done × batch size).
        """
        self._resume = (epoch, skip) if skip > 0 else None

    def iteration_indices(self) -> Tensor:
        """The indices an iteration over the current epoch yields: :meth:`epoch_indices` less a resumed skip."""
        indices = self.epoch_indices()
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = indices[self._resume[1] :]
        return indices

    def epoch_indices(self) -> Tensor:
        """This rank's indices for the current epoch, as an int64 CPU tensor."""
        if self.shuffle:
            generator = seeded_generator(self.seed, "shuffle", self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator)
        else:
            order = torch.arange(self.dataset_size)
        missing = self.total_size - self.dataset_size
        if missing > 0:
            order = torch.cat([order, order.repeat(math.ceil(missing / self.dataset_size))[:missing]])
        return order[self.rank : self.total_size : self.num_replicas]

    @override
    def __iter__(self) -> Iterator[int]:
        return iter(self.iteration_indices().tolist())


class IndexedTestBatch(NamedTuple):
    """A CIFAR-10 test batch that also names each image's position in the test set.

    Test batches (dataloader 0 of :meth:`CIFAR10DataModule.test_dataloader`) have this type so that
    :meth:`CIFAR10DataModule.on_after_batch_transfer` can tell them from training batches, which are plain
    ``(images, labels, positions)`` tuples, even when a callback evaluates the test set while training: they are
    normalised, never augmented, and keep their positions, which a ``test_step`` can match against
    :meth:`CIFAR10DataModule.evaluation_subset`. Being a tuple, ``batch[:2]`` and ``batch[0]`` work as on any batch.
    """

    images: Tensor
    labels: Tensor
    positions: Tensor


def _pack(images: Tensor, labels: Tensor, index: Tensor, with_positions: bool, indexed_test: bool) -> tuple:
    if indexed_test:
        return IndexedTestBatch(images, labels, index)
    return (images, labels, index) if with_positions else (images, labels)


class ResidentBatchLoader:
    """Batches sliced straight out of tensors that already live on the training device.

    Not a DataLoader: no workers, no per-sample Python, one ``index_select`` per tensor and batch. It exposes
    ``sampler`` (so Lightning's ``set_epoch`` reaches it), ``batch_sampler = None`` (read by Lightning's shuffle
    check on evaluation loaders), ``batch_size`` and ``__len__``.

    Args:
        images: ``(N, 3, 32, 32)`` uint8 images.
        labels: ``(N,)`` int64 labels on the same device.
        sampler: Gives this rank's sample order for the current epoch.
        batch_size: Samples per batch; the last batch may be smaller.
        with_positions: Also yield each sample's position in ``images`` (training batches).
        indexed_test: Yield :class:`IndexedTestBatch` ``(images, labels, positions)`` instead (CIFAR-10 test
            batches); overrides ``with_positions``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        sampler: EpochSeededSampler,
        batch_size: int,
        with_positions: bool,
        indexed_test: bool = False,
    ) -> None:
        self.images = images
        self.labels = labels
        self.sampler = sampler
        self.batch_sampler = None
        self.batch_size = batch_size
        self.with_positions = with_positions
        self.indexed_test = indexed_test

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        order = self.sampler.iteration_indices().to(self.images.device)
        for index in order.split(self.batch_size):
            images = self.images.index_select(0, index)
            labels = self.labels.index_select(0, index)
            yield _pack(images, labels, index, self.with_positions, self.indexed_test)


class InMemoryDataset(Dataset):
    """uint8 images and labels in CPU memory; ``__getitems__`` fetches a whole batch with one index op."""

    def __init__(self, images: Tensor, labels: Tensor, with_positions: bool, indexed_test: bool = False) -> None:
        self.images = images
        self.labels = labels
        self.with_positions = with_positions
        self.indexed_test = indexed_test

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        position = torch.tensor(index)
        return _pack(self.images[index], self.labels[index], position, self.with_positions, self.indexed_test)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return _pack(self.images[index], self.labels[index], index, self.with_positions, self.indexed_test)


def collate_batched(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Collate for :class:`InMemoryDataset`, whose ``__getitems__`` already returns a stacked batch."""
    return batch
