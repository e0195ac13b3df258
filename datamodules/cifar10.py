"""CIFAR-10 held in memory as uint8 tensors, with seeded, resumable shuffling and batched augmentation.

CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images",
https://www.cs.toronto.edu/~kriz/learning-features-2009-TR.pdf) has 50,000 training and 10,000 test images of
32x32 pixels in 10 classes.

Every random choice in training is a pure function of ``(seed, epoch, sample position)``: the shuffle order comes
from :class:`EpochSeededSampler` and the crop offsets and flips from :func:`augmentation_plan`, both drawn on a
CPU generator seeded by :func:`pruning_callbacks.engine.seeding.derive_seed`. A resumed run therefore sees exactly the
batches an uninterrupted run would have seen, whatever the number of workers, the device or the number of DDP ranks.
Augmentation runs on whole batches after they reach the device (:meth:`CIFAR10DataModule.on_after_batch_transfer`),
so the loaders only move uint8 tensors.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from typing_extensions import override

from datamodules.ood import OOD_LABEL, load_ood_images, prepare_ood, resolve_ood
from datamodules.subsets import EVAL_SUBSET_SEED, stratified_subset
from pruning_callbacks.engine.seeding import generator as seeded_generator
from pruning_callbacks.engine.seeding import global_seed
from pruning_callbacks.lightning_compat import fit_position

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SIZE = 32
PADDING = 4
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_BATCH = "test_batch"

_DECODE_CHUNK = 2048


def augmentation_plan(seed: int, epoch: int, num_samples: int) -> tuple[Tensor, Tensor]:
    """Draw one epoch's crop offsets and flips for every training sample, on the CPU.

    Args:
        seed: The run seed.
        epoch: The training epoch.
        num_samples: Number of samples in the training split.

    Returns:
        ``shifts`` of shape ``(num_samples, 2)`` (int64 row and column offsets of the crop in the padded image,
        each in ``[0, 2 * PADDING]``) and ``flips`` of shape ``(num_samples,)`` (bool, ``True`` = mirror).
    """
    generator = seeded_generator(seed, "augment", epoch)
    shifts = torch.randint(0, 2 * PADDING + 1, (num_samples, 2), generator=generator)
    flips = torch.randint(0, 2, (num_samples,), generator=generator).bool()
    return shifts, flips


def augment_batch(images: Tensor, shifts: Tensor, flips: Tensor, padding: int = PADDING) -> Tensor:
    """Random-crop with zero padding and horizontal flip, for a whole batch in one gather.

    Equivalent to ``torchvision.transforms.RandomCrop(size, padding=padding)`` followed by
    ``RandomHorizontalFlip`` with the crop's top-left corner and the flip given explicitly. The offsets are not
    range-checked (that would sync the device); they must lie in ``[0, 2 * padding]``.

    Args:
        images: ``(B, C, H, W)`` images of any dtype (uint8 here), on any device.
        shifts: ``(B, 2)`` integer row and column offsets of the crop inside the padded image.
        flips: ``(B,)`` bool, ``True`` where the cropped image is mirrored left to right.
        padding: Zero padding on each side before cropping.

    Returns:
        The augmented batch, same shape, dtype and device as ``images``.

    Raises:
        ValueError: If the shapes of ``images``, ``shifts`` and ``flips`` do not fit together.
    """
    if images.dim() != 4 or shifts.shape != (images.shape[0], 2) or flips.shape != (images.shape[0],):
        raise ValueError(
            f"augment_batch expects images (B, C, H, W), shifts (B, 2) and flips (B,), got "
            f"{tuple(images.shape)}, {tuple(shifts.shape)} and {tuple(flips.shape)}."
        )
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    shifts = shifts.to(device=images.device, dtype=torch.long)
    flips = flips.to(device=images.device, dtype=torch.bool)
    rows = shifts[:, :1] + torch.arange(height, device=images.device)
    columns = torch.arange(width, device=images.device).expand(batch, width)
    columns = torch.where(flips[:, None], columns.flip(-1), columns) + shifts[:, 1:]
    index = (rows[:, :, None] * padded_width + columns[:, None, :]).view(batch, 1, height * width)
    gathered = padded.flatten(2).gather(2, index.expand(batch, channels, height * width))
    return gathered.view(batch, channels, height, width)


@functools.lru_cache(maxsize=8)
def _channel_stats(device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean and std as ``(3, 1, 1)`` tensors on ``device``, made once so normalising never copies to the device."""
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device).view(3, 1, 1)
    return mean, std


def normalize(images: Tensor) -> Tensor:
    """Scale uint8 images to ``[0, 1]`` and standardise each channel with the CIFAR-10 mean and std.

    Args:
        images: ``(..., 3, H, W)`` uint8 images.

    Returns:
        float32 images of the same shape on the same device.
    """
    mean, std = _channel_stats(images.device)
    return images.float().div_(255.0).sub_(mean).div_(std)


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


class _InMemoryDataset(Dataset):
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


def _collate_batched(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Collate for :class:`_InMemoryDataset`, whose ``__getitems__`` already returns a stacked batch."""
    return batch


@dataclass(frozen=True)
class TensorSplit:
    """One split as tensors: ``images`` ``(N, 3, 32, 32)`` uint8 and ``labels`` ``(N,)`` int64."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> TensorSplit:
        """Return this split on ``device`` (itself when it is already there)."""
        if self.images.device == device:
            return self
        return TensorSplit(self.images.to(device), self.labels.to(device))


def _one_line(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= 200 else text[:197] + "..."


def _unreadable(path: Path | str) -> PermissionError:
    return PermissionError(
        f"cannot read {path}: permission denied (--data.data_dir must be readable by this user, folders with "
        f"read and execute permission, e.g. `chmod -R u+rX {path}`)"
    )


def _check_readable(folder: Path) -> None:
    """Raise a one-line PermissionError naming ``folder`` if it exists but this user cannot list or enter it."""
    try:
        is_dir = folder.is_dir()
    except PermissionError:  # a folder above it cannot be entered
        raise _unreadable(folder) from None
    if is_dir and not os.access(folder, os.R_OK | os.X_OK):
        raise _unreadable(folder)


def _class_dirs(split_dir: Path) -> list[str]:
    _check_readable(split_dir)
    if not split_dir.is_dir():
        return []
    try:
        with os.scandir(split_dir) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    except PermissionError:
        raise _unreadable(split_dir) from None


def _find_source(root: Path) -> tuple[str | None, str]:
    """Return ``("image_folder" | "batches_py" | None, note)``; the note says what was incomplete, if anything.

    Raises:
        PermissionError: In one line, naming the folder, if ``root`` or a folder it looks into cannot be read.
    """
    _check_readable(root)
    train_classes, test_classes = _class_dirs(root / "train"), _class_dirs(root / "test")
    if train_classes and test_classes:
        return "image_folder", ""
    notes = []
    if train_classes or test_classes:
        present, absent = ("train", "test") if train_classes else ("test", "train")
        notes.append(f"found {present}/ class folders but no {absent}/ ones")
    batches = root / BATCHES_DIR
    _check_readable(batches)
    if batches.is_dir():
        missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (batches / name).is_file()]
        if not missing:
            return "batches_py", ""
        notes.append(f"{BATCHES_DIR} lacks {', '.join(missing)}")
    return None, f" ({'; '.join(notes)})" if notes else ""


_MAX_NEIGHBOURS = 256
"""Subfolders of ``data_dir`` searched for a copy when ``data_dir`` itself holds none."""


def _nearby_copy(root: Path) -> str:
    """Name a complete copy next to ``root``, for a ``data_dir`` that points at its parent or at one of its folders.

    Looks in ``root``'s subfolders (``data_dir=/tmp`` with the data in ``/tmp/cifar10``) and, when ``root`` is a
    ``train``, ``test`` or ``cifar-10-batches-py`` folder, in its parent.

    Returns:
        A hint such as ``found train/ and test/ in /tmp/cifar10: use --data.data_dir /tmp/cifar10``, or ``""``.
    """
    candidates = [root.parent] if root.name in ("train", "test", BATCHES_DIR) else []
    try:
        with os.scandir(root) as entries:
            names = sorted(entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir())
    except OSError:  # missing or unreadable: nothing below it to suggest
        names = []
    candidates.extend(root / name for name in names[:_MAX_NEIGHBOURS])
    for candidate in candidates:
        try:
            kind, _ = _find_source(candidate)
        except OSError:  # an unreadable neighbour is not the copy
            continue
        if kind == "image_folder":
            return f"found train/ and test/ in {candidate}: use --data.data_dir {candidate}"
        if kind == "batches_py":
            return f"found {BATCHES_DIR}/ in {candidate}: use --data.data_dir {candidate}"
    return ""


def _missing_data_message(root: Path, download_note: str, found_note: str, nearby: str = "") -> str:
    if nearby:
        return (
            f"CIFAR-10 not found in --data.data_dir {root}{found_note}, but {nearby} (data_dir is the folder that "
            f"holds train/<class>/ and test/<class>/, or {BATCHES_DIR}/)."
        )
    return (
        f"CIFAR-10 not found: looked for an image folder at {root}/train/<class>/*.{{png,jpg,jpeg}} and "
        f"{root}/test/<class>/*, and for pickled batches at {root / BATCHES_DIR}{found_note}; {download_note}. "
        "Fix: point --data.data_dir at an extracted copy (e.g. `tar -xzf cifar10-jpeg.tar.gz -C /tmp/cifar10` "
        "then `--data.data_dir /tmp/cifar10`), or pass `--data.download true` on a machine with internet access."
    )


def _decode_with_pil(path: str) -> Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def _decode_chunk(paths: Sequence[str]) -> Tensor:
    """Decode image files into a ``(len(paths), 3, 32, 32)`` uint8 tensor (torchvision.io, PIL as fallback)."""
    out = torch.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for position, path in enumerate(paths):
        try:
            try:
                image = torchvision.io.decode_image(
                    torchvision.io.read_file(path), mode=torchvision.io.ImageReadMode.RGB
                )
            except RuntimeError:  # formats or variants libjpeg/libpng in torchvision cannot read (or no permission)
                image = _decode_with_pil(path)
        except PermissionError:
            raise _unreadable(path) from None
        if image.shape != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"CIFAR-10 images must be {IMAGE_SIZE}x{IMAGE_SIZE}, got {tuple(image.shape[1:])} in {path}."
            )
        out[position] = image
    return out


def _read_image_folder(split_dir: Path, classes: Sequence[str]) -> TensorSplit:
    """Decode ``split_dir/<class>/*`` in sorted file order; the label is the class's index in ``classes``."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        _check_readable(class_dir)
        try:
            with os.scandir(class_dir) as entries:
                files = sorted(
                    entry.name
                    for entry in entries
                    if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                )
        except PermissionError:
            raise _unreadable(class_dir) from None
        paths.extend(str(class_dir / file) for file in files)
        labels.extend([label] * len(files))
    if not paths:
        raise FileNotFoundError(f"No .png/.jpg/.jpeg images found under {split_dir}/<class>/.")
    chunks = [paths[start : start + _DECODE_CHUNK] for start in range(0, len(paths), _DECODE_CHUNK)]
    # File reads and libjpeg/libpng release the GIL, so threads overlap I/O and decoding.
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 1) + 1)) as pool:
        images = torch.cat(list(pool.map(_decode_chunk, chunks)))
    return TensorSplit(images, torch.tensor(labels, dtype=torch.long))


def _read_batches(paths: Sequence[Path]) -> TensorSplit:
    """Parse CIFAR-10 python pickles (``b"data"``: ``(N, 3072)`` uint8, ``b"labels"``: list of int)."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as file:
                entry = pickle.load(file, encoding="bytes")
        except PermissionError:
            raise _unreadable(path) from None
        data = entry.get(b"data", entry.get("data"))
        targets = entry.get(b"labels", entry.get("labels"))
        if data is None or targets is None:
            raise ValueError(f"{path} is not a CIFAR-10 batch: it has no 'data' and 'labels' keys.")
        images.append(torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)))
        labels.append(torch.as_tensor(np.asarray(targets), dtype=torch.long))
    return TensorSplit(torch.cat(images), torch.cat(labels))


def _check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


def _check_bool(name: str, value: object, allow_none: bool = False) -> None:
    if isinstance(value, bool) or (value is None and allow_none):
        return
    allowed = "true, false or null" if allow_none else "true or false"
    raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


class CIFAR10DataModule(LightningDataModule):
    """CIFAR-10 (Krizhevsky 2009) in memory, with deterministic shuffling and on-device augmentation.

    Data sources, tried in this order: an image folder (``data_dir/train/<class>/*.{png,jpg,jpeg}`` and
    ``data_dir/test/<class>/*``, class index = position of the folder name in sorted order, which is the standard
    airplane..truck order), an extracted ``data_dir/cifar-10-batches-py``, and, when ``download`` is set, a
    torchvision download into ``data_dir`` during :meth:`prepare_data`.

    ``val_size`` training images picked by a permutation seeded with ``split_seed`` form the validation split; the
    rest, in that permuted order, is the training split, of which ``train_subset`` keeps the first images. The test
    split is the official test set.

    Training batches are ``(uint8 images, labels, positions)``, CIFAR-10 test batches
    :class:`IndexedTestBatch` ``(uint8 images, labels, positions)`` and the other evaluation batches (validation,
    OOD, predict) ``(uint8 images, labels)``. :meth:`on_after_batch_transfer` normalises all of them, applies the
    epoch's random crop (4-pixel zero padding) and horizontal flip to training batches first, drops the positions of
    training batches and keeps those of test batches: a ``test_step`` receives ``(images, labels, positions)`` from
    dataloader 0 (take ``batch[:2]`` when the positions are not needed) and ``(images, labels)`` otherwise. The
    shuffle order, crops and flips depend only on ``(seed, epoch, position)``.

    :meth:`evaluation_subset` names a class-balanced subset of the test set, the same for every run, seed and rank
    (:func:`datamodules.subsets.stratified_subset` with :data:`datamodules.subsets.EVAL_SUBSET_SEED`); the
    classifier's adversarial metrics attack exactly those images.

    With ``ood`` set, :meth:`test_dataloader` returns two loaders, ``[CIFAR-10 test, OOD]``; the OOD batches are
    ``(uint8 images, labels = -1)`` and are normalised exactly like test batches (:mod:`datamodules.ood`). A module's
    ``test_step`` then receives ``dataloader_idx`` 0 or 1. Validation and predict loaders never include it.

    With ``gpu_resident`` the whole dataset is copied to the training device once and batches are sliced from it
    (:class:`ResidentBatchLoader`); otherwise a ``DataLoader`` with ``num_workers`` workers serves it from CPU
    memory. Both give bit-identical batches.

    Paper: https://www.cs.toronto.edu/~kriz/learning-features-2009-TR.pdf

    Args:
        data_dir: Folder that holds (or receives) the data.
        batch_size: Training batch size per process; the last, smaller batch is kept.
        eval_batch_size: Validation, test and predict batch size per process.
        val_size: Number of training images held out for validation; 0 disables validation.
        train_subset: Keep only this many training images (after the validation split); ``None`` keeps all.
        split_seed: Seed of the train/validation split.
        seed: Seed of the shuffle order and augmentation; ``None`` uses the seed given to Lightning's
            ``seed_everything`` (``PL_GLOBAL_SEED``, 0 when unset).
        gpu_resident: Keep the dataset on the training device and slice batches there; ``None`` means ``True``
            exactly when the trainer runs on CUDA. ``True`` on a CPU trainer uses the same loader in CPU memory.
        num_workers: DataLoader workers (DataLoader path only).
        download: Download with torchvision in :meth:`prepare_data` when no local copy is found (CIFAR-10 and the
            ``cifar100`` / ``svhn`` OOD sets).
        ood: Out-of-distribution test set served as a second test loader: ``null`` / ``none`` (no second loader),
            ``gaussian``, ``uniform``, ``cifar100``, ``svhn``, or a path to a folder of ``.png``/``.jpg``/``.jpeg``
            images (any layout, resized to 32x32); default ``gaussian``, which needs no download. See
            :mod:`datamodules.ood`.
        ood_size: Number of images of the ``gaussian`` and ``uniform`` sets, drawn from ``seed``; the other sets are
            used whole.

    Raises:
        ValueError: If an argument has the wrong type or is out of range.
    """

    def __init__(
        self,
        data_dir: str = "./data",
        batch_size: int = 128,
        eval_batch_size: int = 512,
        val_size: int = 5000,
        train_subset: int | None = None,
        split_seed: int = 0,
        seed: int | None = None,
        gpu_resident: bool | None = None,
        num_workers: int = 2,
        download: bool = True,
        ood: str | None = "gaussian",
        ood_size: int = 10_000,
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
            raise ValueError(f"`data_dir` must be a non-empty path string, got {data_dir!r}.")
        _check_int("batch_size", batch_size, 1)
        _check_int("eval_batch_size", eval_batch_size, 1)
        _check_int("val_size", val_size, 0)
        _check_int("train_subset", train_subset, 1, allow_none=True)
        _check_int("split_seed", split_seed, 0)
        _check_int("seed", seed, 0, allow_none=True)
        _check_bool("gpu_resident", gpu_resident, allow_none=True)
        _check_int("num_workers", num_workers, 0)
        _check_bool("download", download)
        resolved_ood = resolve_ood(ood)
        _check_int("ood_size", ood_size, 1)
        # Recorded in checkpoints and exposed as ``self.hparams``; no key may clash with the model's hparams, or
        # Lightning refuses to log both.
        self.save_hyperparameters()
        self.data_dir = str(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.train_subset = train_subset
        self.split_seed = split_seed
        self.seed = seed
        self.gpu_resident = gpu_resident
        self.num_workers = num_workers
        self.download = download
        self.ood = resolved_ood
        self.ood_size = ood_size

        self.classes: tuple[str, ...] = CLASSES
        self.source: str | None = None
        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None
        self.train_split: TensorSplit | None = None
        self.val_split: TensorSplit | None = None
        self.test_split: TensorSplit | None = None
        self.ood_split: TensorSplit | None = None
        self._ood_key: tuple[str, int, int] | None = None
        self.resolved_seed: int | None = None
        self.resident = False
        self._plan: tuple[int, torch.device, Tensor, Tensor] | None = None
        self._train_sampler: EpochSeededSampler | None = None
        self._eval_subset: tuple[int, Tensor] | None = None

    @property
    def root(self) -> Path:
        """``data_dir`` with ``~`` expanded, as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for CIFAR-10)."""
        return len(self.classes)

    @override
    def prepare_data(self) -> None:
        """Download CIFAR-10 (and a ``cifar100`` / ``svhn`` OOD set) when no local copy exists and ``download`` is set.

        No download happens when ``data_dir`` holds no copy but one of its subfolders does (``data_dir`` names the
        copy's parent): the error names that subfolder instead.

        Raises:
            FileNotFoundError: If there is no local copy and the download is disabled or fails, or the copy is in a
                subfolder of ``data_dir``.
            PermissionError: If ``data_dir`` or a folder in it cannot be read (one line naming it).
        """
        self._prepare_cifar10()
        prepare_ood(self.ood, self.root, self.download)

    def _prepare_cifar10(self) -> None:
        root = self.root
        kind, found_note = _find_source(root)
        if kind is not None:
            return
        nearby = _nearby_copy(root)
        if nearby:  # data_dir names the parent (or a folder) of a copy: point there rather than download another
            raise FileNotFoundError(_missing_data_message(root, "", found_note, nearby))
        if not self.download:
            raise FileNotFoundError(
                _missing_data_message(root, "the download is disabled (--data.download false)", found_note)
            )
        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as error:  # no network, proxy, HTTP errors, corrupt archive: all end the same way
            note = f"the download to {root} failed ({_one_line(error)})"
            raise FileNotFoundError(_missing_data_message(root, note, found_note)) from None
        kind, found_note = _find_source(root)
        if kind is None:
            note = "the download finished but left no complete copy"
            raise FileNotFoundError(_missing_data_message(root, note, found_note))

    @override
    def setup(self, stage: str) -> None:
        """Load the data once, split it, resolve the seed and place the tensors for the chosen loader.

        Args:
            stage: Lightning's stage (``fit``, ``validate``, ``test`` or ``predict``); every stage loads all of
                CIFAR-10, only ``test`` the OOD set.

        The number of class folders is checked against the attached model's ``hparams.num_classes`` here, before
        any image is decoded (the one hook where both the data and the model are known; see
        :meth:`_check_model_classes`).

        Raises:
            FileNotFoundError: If no local copy exists (download happens in :meth:`prepare_data`, not here).
            PermissionError: If a data folder or file cannot be read (one line naming it).
            ValueError: If ``val_size`` or ``train_subset`` do not fit the training set, or the data has another
                number of classes than the model's ``num_classes``.
        """
        if self.train_split is None:
            self._load_and_split()
        else:
            self._check_model_classes(self.classes)
        self.resolved_seed = self.seed if self.seed is not None else global_seed()
        self._plan = None
        device = self._training_device()
        self.resident = device.type == "cuda" if self.gpu_resident is None else self.gpu_resident
        storage = device if self.resident else torch.device("cpu")
        assert self.train_split is not None and self.test_split is not None
        self.train_split = self.train_split.to(storage)
        self.test_split = self.test_split.to(storage)
        if self.val_split is not None:
            self.val_split = self.val_split.to(storage)
        if stage == "test":
            self._setup_ood()

    def _setup_ood(self) -> None:
        """Build the OOD set once per ``(set, size, seed)`` and place it with the other splits.

        Called for the ``test`` stage only (and by :meth:`test_dataloader` when another stage asks for test batches),
        so ``fit`` neither loads nor holds it.
        """
        if self.ood is None:
            self.ood_split = None
            return
        assert self.resolved_seed is not None and self.test_split is not None
        storage = self.test_split.images.device
        key = (self.ood, self.ood_size, self.resolved_seed)
        if self.ood_split is None or self._ood_key != key:
            start = time.perf_counter()
            images = load_ood_images(self.ood, self.root, self.ood_size, self.resolved_seed)
            self.ood_split = TensorSplit(images, torch.full((len(images),), OOD_LABEL, dtype=torch.long))
            self._ood_key = key
            rank_zero_info(f"OOD test set {self.ood!r}: {len(images)} images in {time.perf_counter() - start:.1f}s.")
        self.ood_split = self.ood_split.to(storage)

    def _load_and_split(self) -> None:
        root = self.root
        kind, found_note = _find_source(root)
        if kind is None:
            note = (
                "the download is enabled but prepare_data() has not downloaded a copy (call it before setup())"
                if self.download
                else "the download is disabled (--data.download false)"
            )
            raise FileNotFoundError(_missing_data_message(root, note, found_note, _nearby_copy(root)))
        start = time.perf_counter()
        if kind == "image_folder":
            classes = _class_dirs(root / "train")
            if _class_dirs(root / "test") != classes:
                raise ValueError(
                    f"{root}/train and {root}/test must hold the same class folders, got {classes} and "
                    f"{_class_dirs(root / 'test')}."
                )
            self._check_model_classes(classes)  # before decoding a single image
            train = _read_image_folder(root / "train", classes)
            test = _read_image_folder(root / "test", classes)
            self.classes = tuple(classes)
        else:
            self._check_model_classes(CLASSES)
            batches = root / BATCHES_DIR
            train = _read_batches([batches / name for name in TRAIN_BATCHES])
            test = _read_batches([batches / TEST_BATCH])
            self.classes = CLASSES
        self.source = kind
        rank_zero_info(
            f"CIFAR-10: loaded {len(train)} training and {len(test)} test images from {root} ({kind}) "
            f"in {time.perf_counter() - start:.1f}s."
        )

        if self.val_size >= len(train):
            raise ValueError(f"`val_size` must be smaller than the {len(train)} training images, got {self.val_size}.")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        val_indices, train_indices = order[: self.val_size], order[self.val_size :]
        if self.train_subset is not None:
            if self.train_subset > len(train_indices):
                raise ValueError(
                    f"`train_subset` must be at most the {len(train_indices)} training images left after "
                    f"the validation split, got {self.train_subset}."
                )
            train_indices = train_indices[: self.train_subset]
        self.train_indices, self.val_indices = train_indices, val_indices
        self.train_split = TensorSplit(train.images[train_indices], train.labels[train_indices])
        self.val_split = (
            TensorSplit(train.images[val_indices], train.labels[val_indices]) if self.val_size > 0 else None
        )
        self.test_split = test

    def _check_model_classes(self, classes: Sequence[str]) -> None:
        """Refuse data whose number of classes differs from the attached model's ``num_classes``.

        The check lives here, in :meth:`setup`, because this is the first point where both are known: the class
        folders are listed (no image decoded yet) and the trainer holds the model, whose ``hparams.num_classes``
        (:class:`lit_modules.ResNet18Classifier`) is read. A model without that hyperparameter, or no trainer, skips it.

        Raises:
            ValueError: In one line, naming both options and both counts.
        """
        module = self.trainer.lightning_module if self.trainer is not None else None
        hparams = getattr(module, "hparams", None)
        expected = hparams.get("num_classes") if hasattr(hparams, "get") else None
        if expected is None or expected == len(classes):
            return
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"--data.data_dir {self.root} holds {len(classes)} classes ({shown}) but --model.num_classes is "
            f"{expected}; pass --model.num_classes {len(classes)}, or point --data.data_dir at a copy with "
            f"{expected} class folders in train/ and test/."
        )

    def _training_device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _replicas(self) -> tuple[int, int]:
        """``(world_size, global_rank)`` of the attached trainer; ``(1, 0)`` without one."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _require_setup(self) -> int:
        if self.train_split is None or self.resolved_seed is None:
            raise RuntimeError("CIFAR10DataModule: call setup() before asking for a dataloader.")
        return self.resolved_seed

    def _data_loader(
        self,
        split: TensorSplit,
        batch_size: int,
        with_positions: bool,
        sampler: EpochSeededSampler | None,
        indexed_test: bool = False,
    ) -> DataLoader:
        return DataLoader(
            _InMemoryDataset(split.images, split.labels, with_positions, indexed_test),
            batch_size=batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_collate_batched,
            pin_memory=self._training_device().type == "cuda",
            drop_last=False,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_leave_stop_signals_to_the_main_process if self.num_workers > 0 else None,
        )

    def _eval_loader(self, split: TensorSplit, indexed_test: bool = False) -> DataLoader | ResidentBatchLoader:
        if self.resident:
            world_size, rank = self._replicas()
            sampler = EpochSeededSampler(len(split), seed=0, shuffle=False, num_replicas=world_size, rank=rank)
            return ResidentBatchLoader(split.images, split.labels, sampler, self.eval_batch_size, False, indexed_test)
        # Under DDP Lightning swaps in a DistributedSampler(shuffle=False), with the same sharding and padding as above.
        return self._data_loader(split, self.eval_batch_size, False, sampler=None, indexed_test=indexed_test)

    @override
    def train_dataloader(self) -> DataLoader | ResidentBatchLoader:
        """Training batches ``(uint8 images, labels, positions)`` in this rank's seeded order for the epoch."""
        seed = self._require_setup()
        assert self.train_split is not None
        world_size, rank = self._replicas()
        sampler = EpochSeededSampler(len(self.train_split), seed=seed, shuffle=True, num_replicas=world_size, rank=rank)
        # Lightning creates the first iterator of a fit (or of a resumed fit) *before* it calls set_epoch, and a
        # DataLoader with workers draws its indices when the iterator is created. Starting the sampler at the
        # epoch the fit loop is about to run makes a resumed run draw that epoch's order, not epoch 0's.
        if self.trainer is not None:
            epoch, batches_done = fit_position(self.trainer)
            sampler.set_epoch(epoch)
            # Resumed from a checkpoint written mid-epoch: continue with the next batch, not the epoch's first.
            sampler.resume_within_epoch(epoch, batches_done * self.batch_size)
        self._train_sampler = sampler
        if self.resident:
            split = self.train_split
            return ResidentBatchLoader(split.images, split.labels, sampler, self.batch_size, True)
        return self._data_loader(self.train_split, self.batch_size, with_positions=True, sampler=sampler)

    @override
    def val_dataloader(self) -> DataLoader | ResidentBatchLoader | list:
        """Validation batches ``(uint8 images, labels)``; an empty list when ``val_size`` is 0."""
        self._require_setup()
        if self.val_split is None:
            return []
        return self._eval_loader(self.val_split)

    @override
    def test_dataloader(self) -> DataLoader | ResidentBatchLoader | list[DataLoader | ResidentBatchLoader]:
        """The official test set; ``[test, OOD]`` when ``ood`` is set.

        Test batches are :class:`IndexedTestBatch` ``(uint8 images, labels, positions)`` in test-set order (sharded
        by rank under DDP), OOD batches ``(uint8 images, labels = -1)``.
        """
        self._require_setup()
        assert self.test_split is not None
        test = self._eval_loader(self.test_split, indexed_test=True)
        self._setup_ood()
        if self.ood_split is None:
            return test
        return [test, self._eval_loader(self.ood_split)]

    @override
    def predict_dataloader(self) -> DataLoader | ResidentBatchLoader:
        """Batches ``(uint8 images, labels)`` of the CIFAR-10 test set (never the OOD one)."""
        self._require_setup()
        assert self.test_split is not None
        return self._eval_loader(self.test_split)

    def evaluation_subset(self, size: int) -> Tensor:
        """A class-balanced subset of ``size`` test images, the same for every run, seed, device and rank.

        :func:`datamodules.subsets.stratified_subset` of the test labels with the fixed
        :data:`datamodules.subsets.EVAL_SUBSET_SEED` (not the run seed): every class gets ``size / C`` images to
        within one, the images inside a class are a seeded random draw, and a smaller subset is contained in a
        larger one. The positions index the test set as :meth:`test_dataloader` numbers it
        (:class:`IndexedTestBatch` ``positions``).

        Args:
            size: Number of test images; more than the test set holds means all of them.

        Returns:
            A ``(N_test,)`` bool CPU tensor, ``True`` at the chosen positions.

        Raises:
            RuntimeError: If :meth:`setup` has not run.
            ValueError: If ``size`` is negative.
        """
        if self.test_split is None:
            raise RuntimeError("CIFAR10DataModule: call setup() before asking for the evaluation subset.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"`size` must be an int >= 0, got {size!r}.")
        size = min(size, len(self.test_split))
        if self._eval_subset is None or self._eval_subset[0] != size:
            self._eval_subset = (size, stratified_subset(self.test_split.labels, size, EVAL_SUBSET_SEED))
        return self._eval_subset[1].clone()

    @override
    def on_after_batch_transfer(
        self, batch: Sequence[Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor] | IndexedTestBatch:
        """Augment training batches with the epoch's plan, then normalise; runs on the batch's device.

        Args:
            batch: ``(uint8 images, labels, positions)`` while training, an :class:`IndexedTestBatch` from the
                CIFAR-10 test loader, ``(uint8 images, labels)`` otherwise (validation, predict and OOD batches,
                whatever their ``dataloader_idx``).
            dataloader_idx: Index of the dataloader the batch came from.

        Returns:
            ``IndexedTestBatch(float32 normalised images, labels, positions)`` for a test batch, never augmented;
            ``(float32 normalised images, labels)`` for every other batch.
        """
        if isinstance(batch, Tensor):
            return batch  # not a batch of this datamodule: the model's example_input_array (model summary FLOPs)
        if isinstance(batch, IndexedTestBatch):
            return IndexedTestBatch(normalize(batch.images), batch.labels, batch.positions)
        images, labels = batch[0], batch[1]
        # Only training batches are plain 3-tuples (test batches returned above); an evaluation batch seen while
        # training (a callback measuring test accuracy between pruning rounds, say) is normalised but never augmented.
        if len(batch) == 3 and self.trainer is not None and self.trainer.training:
            # The sampler's epoch, not trainer.current_epoch: both orders and augmentations follow set_epoch.
            epoch = self._train_sampler.epoch if self._train_sampler is not None else self.trainer.current_epoch
            shifts, flips = self._epoch_plan(epoch, images.device)
            positions = batch[2]
            images = augment_batch(images, shifts[positions], flips[positions])
        return normalize(images), labels

    def _epoch_plan(self, epoch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The epoch's crop offsets and flips for all training samples, cached on ``device`` for the epoch."""
        if self._plan is None or self._plan[:2] != (epoch, device):
            assert self.train_split is not None and self.resolved_seed is not None
            shifts, flips = augmentation_plan(self.resolved_seed, epoch, len(self.train_split))
            self._plan = (epoch, device, shifts.to(device), flips.to(device))
        return self._plan[2], self._plan[3]


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """In a DataLoader worker: ignore SIGTERM and SIGINT, which the main process handles.

    A cluster's pre-emption (SLURM's ``scancel``), a closing notebook or Ctrl-C in a terminal signals the whole
    process group. A worker that died of it would make the main process raise before it could save ``last.ckpt``
    (:class:`analysis.checkpointing.AutoSave`); ignoring the signal here lets the main process save and then shut
    its workers down. A worker whose main process is killed outright still exits on its own (PyTorch's watchdog).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
