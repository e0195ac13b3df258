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

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from datamodules.augment import (  # noqa: F401 - importable from here, as before
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGE_SIZE,
    PADDING,
    augment_batch,
    augmentation_plan,
    normalize,
)
from datamodules.ood import OOD_LABEL, load_ood_images, prepare_ood, resolve_ood
from datamodules.sampling import (
    EpochSeededSampler,
    IndexedTestBatch,
    InMemoryDataset,
    ResidentBatchLoader,
    collate_batched,
)
from datamodules.sources import (  # noqa: F401
    BATCHES_DIR,
    CLASSES,
    IMAGE_SUFFIXES,
    TEST_BATCH,
    TRAIN_BATCHES,
    TensorSplit,
    class_dirs,
    find_source,
    missing_data_message,
    nearby_copy,
    one_line,
    read_batches,
    read_image_folder,
)
from datamodules.subsets import EVAL_SUBSET_SEED, stratified_subset
from pruning_callbacks.engine.seeding import global_seed
from pruning_callbacks.lightning_compat import fit_position


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
        kind, found_note = find_source(root)
        if kind is not None:
            return
        nearby = nearby_copy(root)
        if nearby:  # data_dir names the parent (or a folder) of a copy: point there rather than download another
            raise FileNotFoundError(missing_data_message(root, "", found_note, nearby))
        if not self.download:
            raise FileNotFoundError(
                missing_data_message(root, "the download is disabled (--data.download false)", found_note)
            )
        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as error:  # no network, proxy, HTTP errors, corrupt archive: all end the same way
            note = f"the download to {root} failed ({one_line(error)})"
            raise FileNotFoundError(missing_data_message(root, note, found_note)) from None
        kind, found_note = find_source(root)
        if kind is None:
            note = "the download finished but left no complete copy"
            raise FileNotFoundError(missing_data_message(root, note, found_note))

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
        kind, found_note = find_source(root)
        if kind is None:
            note = (
                "the download is enabled but prepare_data() has not downloaded a copy (call it before setup())"
                if self.download
                else "the download is disabled (--data.download false)"
            )
            raise FileNotFoundError(missing_data_message(root, note, found_note, nearby_copy(root)))
        start = time.perf_counter()
        if kind == "image_folder":
            classes = class_dirs(root / "train")
            if class_dirs(root / "test") != classes:
                raise ValueError(
                    f"{root}/train and {root}/test must hold the same class folders, got {classes} and "
                    f"{class_dirs(root / 'test')}."
                )
            self._check_model_classes(classes)  # before decoding a single image
            train = read_image_folder(root / "train", classes)
            test = read_image_folder(root / "test", classes)
            self.classes = tuple(classes)
        else:
            self._check_model_classes(CLASSES)
            batches = root / BATCHES_DIR
            train = read_batches([batches / name for name in TRAIN_BATCHES])
            test = read_batches([batches / TEST_BATCH])
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
            InMemoryDataset(split.images, split.labels, with_positions, indexed_test),
            batch_size=batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_batched,
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
