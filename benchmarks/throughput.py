"""Training throughput of the CIFAR ResNet18 on the project's data path: a plain PyTorch loop and ``Trainer.fit``.

Both feed the model the way :class:`datamodules.CIFAR10DataModule` does on its fast path: the uint8 images live on the
training device, each batch is sliced out of them (:class:`~datamodules.cifar10.ResidentBatchLoader`), then cropped,
flipped (:func:`~datamodules.cifar10.augment_batch` with the epoch's :func:`~datamodules.cifar10.augmentation_plan`)
and normalized in one batched pass. Without ``data_dir`` the images are random uint8 pixels held in memory
(:class:`InMemoryCIFAR10`): every operation on the path is data-independent (gathers, dense convolutions on dense
weights), so the time does not depend on the pixel values.

Variants, all on the same :class:`~lit_modules.ResNet18Classifier` (``configure_model`` applies channels_last and
compilation; ``configure_optimizers`` gives the project's SGD recipe):

* ``dense``: no pruning;
* ``masked``: this project's engine, a random 90%-sparse ERK mask kept exact by
  :class:`~pruning_callbacks.engine.apply.MaskApplier` (two ``torch._foreach_mul_`` after each optimizer step; in
  Lightning through the :class:`~pruning_callbacks.StaticSparse` callback);
* ``torch_prune``: the same mask applied the way Lightning's ``ModelPruning`` applies masks, through
  ``torch.nn.utils.prune`` re-parametrization (``weight = weight_orig * weight_mask`` rebuilt by a forward pre-hook
  on every call);
* loop only, ``dense_train_acc``: the dense step plus the classifier's own ``train_acc(logits, y)`` call, and
  ``dense_train_acc_unvalidated``: the same with ``validate_args=False`` and ``update`` (the proposed fix: the
  validation calls ``torch.unique`` on the targets, a host sync at every step);
* Lightning only, ``dense_unvalidated_acc``: the classifier with that fix; ``dense_progress_bar``: the CLI's
  ``RichProgressBar`` (rendering into memory);
* ``*_compiled``: ``torch.compile`` through the classifier's ``compile=True`` path, compiled once per process and
  reused by every model and round.
"""

from __future__ import annotations

import io
import itertools
import statistics
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.nn.utils import prune
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from datamodules import CIFAR10DataModule
from datamodules.cifar10 import (
    EpochSeededSampler,
    ResidentBatchLoader,
    TensorSplit,
    augment_batch,
    augmentation_plan,
    normalize,
)
from lit_modules import ResNet18Classifier
from pruning_callbacks.callbacks.dynamic import StaticSparse, random_sparse_masks
from pruning_callbacks.engine.apply import MaskApplier
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.seeding import derive_seed

EPOCH_IMAGES = 45_000
"""Training images of one CIFAR-10 epoch: 50,000 minus the 5,000 held out for validation."""
SEED = 0
NUM_CLASSES = 10


def compile_graphs() -> int:
    """Graphs TorchDynamo has handed to a backend in this process so far (one per compilation or recompilation)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def sparse_masks(model: LightningModule, sparsity: float, seed: int = SEED) -> Masks:
    """The random ERK mask :class:`~pruning_callbacks.StaticSparse` starts from for ``seed``."""
    params = prunable_parameters(model)
    return random_sparse_masks(params, sparsity, "erk", derive_seed(seed, "sparse_from_scratch", "init"))


def apply_torch_prune(model: LightningModule, masks: Masks) -> None:
    """Install ``masks`` with ``torch.nn.utils.prune``, as ``ModelPruning`` does (forward pre-hook per layer)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module_name, _, attribute = name.rpartition(".")
        module = modules[module_name]
        prune.custom_from_mask(module, attribute, mask.to(getattr(module, attribute).device))


def new_model(settings: Any, compiled: bool) -> ResNet18Classifier:
    """A freshly initialized classifier (seeded) at the benchmark's width and memory format; not yet configured."""
    torch.manual_seed(SEED)
    return ResNet18Classifier(
        compile_backend=settings.compile_backend,
        width=settings.width,
        channels_last=settings.channels_last,
        compile=compiled,
    )


# --------------------------------------------------------------------------------------------------------------- data
class InMemoryCIFAR10(CIFAR10DataModule):
    """:class:`~datamodules.CIFAR10DataModule` over random uint8 images made in memory: nothing is read or downloaded.

    Loaders, sampler, augmentation and normalization are the datamodule's own; only the images differ. Training
    throughput does not depend on pixel values, so this times the real data path without the data.

    Args:
        train_images: Number of training images (no validation split).
        batch_size: Training batch size.
    """

    def __init__(self, train_images: int = EPOCH_IMAGES, batch_size: int = 500) -> None:
        super().__init__(
            data_dir="in-memory",
            batch_size=batch_size,
            val_size=0,
            seed=SEED,
            gpu_resident=True,
            num_workers=0,
            download=False,
        )
        generator = torch.Generator().manual_seed(SEED)
        images = torch.randint(0, 256, (train_images, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, NUM_CLASSES, (train_images,), generator=generator)
        # setup() loads files only when no split is there yet.
        self.train_split = TensorSplit(images, labels)
        self.test_split = TensorSplit(images[:1000], labels[:1000])
        self.source = "in-memory random uint8"

    @override
    def prepare_data(self) -> None:
        """Nothing to download."""


def make_datamodule(data_dir: str | None, train_images: int, batch_size: int) -> CIFAR10DataModule:
    """Random in-memory images without ``data_dir``; else ``train_images`` images of the CIFAR-10 copy there.

    Both keep the data resident (on the training device; in CPU memory on a CPU) and do not validate.

    Raises:
        FileNotFoundError: If ``data_dir`` holds no CIFAR-10 copy.
        ValueError: If it holds fewer than ``train_images`` training images.
    """
    if data_dir is None:
        return InMemoryCIFAR10(train_images, batch_size)
    datamodule = CIFAR10DataModule(
        data_dir,
        batch_size=batch_size,
        val_size=0,
        train_subset=train_images,
        seed=SEED,
        gpu_resident=True,
        num_workers=0,
        download=False,
    )
    datamodule.prepare_data()
    return datamodule


class ResidentBatches(Iterator[tuple[Tensor, Tensor]]):
    """Endless training batches made as the datamodule's resident path makes them, without a Trainer.

    Each batch is sliced by :class:`~datamodules.cifar10.ResidentBatchLoader` in the seeded epoch order, then
    augmented with the epoch's plan and normalized: the same calls ``CIFAR10DataModule.on_after_batch_transfer``
    makes. Only full batches are served, so every step has the same shape (a compiled model never sees a new one).

    Args:
        split: Training images and labels.
        batch_size: Images per batch.
        device: Where the images live and the batches are made.

    Raises:
        ValueError: If the split holds fewer images than one batch.
    """

    def __init__(self, split: TensorSplit, batch_size: int, device: torch.device) -> None:
        if len(split) < batch_size:
            raise ValueError(f"the training split has {len(split)} images, fewer than one batch of {batch_size}.")
        split = split.to(device)
        self.size = len(split)
        self.device = device
        self.sampler = EpochSeededSampler(self.size, seed=SEED)
        self.loader = ResidentBatchLoader(split.images, split.labels, self.sampler, batch_size, with_positions=True)
        self.full_batches = self.size // batch_size
        self.epoch = -1
        self._start_epoch()

    def _start_epoch(self) -> None:
        self.epoch += 1
        self.sampler.set_epoch(self.epoch)
        shifts, flips = augmentation_plan(SEED, self.epoch, self.size)
        self.shifts, self.flips = shifts.to(self.device), flips.to(self.device)
        self._batches = itertools.islice(iter(self.loader), self.full_batches)

    def __next__(self) -> tuple[Tensor, Tensor]:
        batch = next(self._batches, None)
        if batch is None:
            self._start_epoch()
            batch = next(self._batches)
        images, labels, positions = batch
        return normalize(augment_batch(images, self.shifts[positions], self.flips[positions])), labels


# ------------------------------------------------------------------------------------------------------ plain loop
@dataclass
class LoopRun:
    """One variant of the plain loop: its model, optimizer and what its step does besides training."""

    model: ResNet18Classifier
    optimizer: torch.optim.Optimizer
    accuracy: Callable[[Tensor, Tensor], Any] | None = None
    applier: MaskApplier | None = None
    handle: RemovableHandle | None = None

    def set_masks(self, masks: Masks) -> None:
        """Replace the masks as a pruning callback does: new applier, weights and momentum zeroed, hook re-attached."""
        if self.handle is not None:
            self.handle.remove()
        self.applier = MaskApplier(prunable_parameters(self.model), masks)
        self.applier.apply_()
        self.applier.mask_optimizer_state_(self.optimizer)
        self.handle = self.applier.attach(self.optimizer)


def build_loop_run(settings: Any, variant: str, device: torch.device) -> LoopRun:
    """Build one plain-loop variant (see the module docstring for the names)."""
    compiled = variant.endswith("_compiled")
    base = variant.removesuffix("_compiled")
    model = new_model(settings, compiled).to(device)
    model.configure_model()
    optimizer = model.configure_optimizers()["optimizer"]
    run = LoopRun(model, optimizer)
    if base == "masked":
        run.set_masks(sparse_masks(model, settings.sparsity))
    elif base == "torch_prune":
        apply_torch_prune(model, sparse_masks(model, settings.sparsity))
    elif base == "dense_train_acc":
        run.accuracy = model.train_acc
    elif base == "dense_train_acc_unvalidated":
        metric = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False).to(device)
        run.accuracy = metric.update
    elif base != "dense":
        raise ValueError(f"unknown loop variant {variant!r}")
    return run


def loop_step(run: LoopRun, batches: Iterator[tuple[Tensor, Tensor]], autocast: torch.autocast) -> None:
    """One training step as Lightning's automatic optimization does it: forward under autocast, backward, step."""
    x, y = next(batches)
    with autocast:
        logits = run.model(x)
        loss = F.cross_entropy(logits, y)
        if run.accuracy is not None:
            run.accuracy(logits.detach(), y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()


def time_steps(step: Callable[[], None], steps: int, cuda: bool) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step``, without a host sync between them.

    On CUDA the steps are timed with events recorded on the stream, so the host keeps queueing work as in training
    and a step's time is the device time between its events (idle gaps included); on a CPU with a wall clock.
    """
    if not cuda:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return times
    torch.cuda.synchronize()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for event in events[1:]:
        step()
        event.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in itertools.pairwise(events)]


def step_stats(times: Sequence[float], batch_size: int) -> dict[str, float]:
    """Mean and median step, images per second and the implied seconds per 45,000-image epoch (from the mean)."""
    mean = statistics.fmean(times)
    return {
        "steps": len(times),
        "mean_step_s": mean,
        "median_step_s": statistics.median(times),
        "images_per_s": batch_size / mean,
        "epoch_s": EPOCH_IMAGES / (batch_size / mean),
    }


def interleaved(variants: Sequence[str], rounds: int) -> Iterator[str]:
    """Every variant once per round, in reversed order on odd rounds (ABBA), so drift and order effects cancel."""
    for index in range(rounds):
        yield from variants if index % 2 == 0 else reversed(variants)


def run_loop(
    settings: Any, variants: Sequence[str], split: TensorSplit, device: torch.device
) -> tuple[dict[str, dict[str, float]], dict[str, LoopRun], dict[str, float]]:
    """Warm every variant up, then time ``steps`` steps per variant and round, interleaved.

    Returns:
        Statistics per variant, the runs themselves (for a later mask change) and each variant's warm-up seconds
        (compilation included).
    """
    cuda = device.type == "cuda"
    batches = ResidentBatches(split, settings.batch_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16")
    runs = {variant: build_loop_run(settings, variant, device) for variant in variants}
    warmup_s = {}
    for variant, run in runs.items():
        start = time.perf_counter()
        time_steps(lambda run=run: loop_step(run, batches, autocast), settings.warmup, cuda)
        warmup_s[variant] = time.perf_counter() - start
    samples: dict[str, list[float]] = {variant: [] for variant in variants}
    for variant in interleaved(variants, settings.rounds):
        run = runs[variant]
        samples[variant] += time_steps(lambda run=run: loop_step(run, batches, autocast), settings.steps, cuda)
    return {variant: step_stats(samples[variant], settings.batch_size) for variant in variants}, runs, warmup_s


def recompiles_after_mask_changes(
    settings: Any, run: LoopRun, split: TensorSplit, device: torch.device
) -> dict[str, int]:
    """Graphs compiled by ``steps`` steps after each of two mask changes of a warmed-up compiled masked run.

    The changes are what the methods do between steps: a new topology at the same sparsity (RigL, SET) and a
    sparser mask (a pruning round). Masks live outside the compiled graph (applied in place to the parameters after
    the optimizer step), so both counts should be 0.
    """
    batches = ResidentBatches(split, settings.batch_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16")
    counts = {}
    changes = {
        "new_topology": sparse_masks(run.model, settings.sparsity, seed=SEED + 1),
        "higher_sparsity": sparse_masks(run.model, 1.0 - (1.0 - settings.sparsity) / 2, seed=SEED + 2),
    }
    for name, masks in changes.items():
        before = compile_graphs()
        run.set_masks(masks)
        time_steps(lambda: loop_step(run, batches, autocast), max(settings.warmup, 2), device.type == "cuda")
        counts[name] = compile_graphs() - before
    return counts


# ------------------------------------------------------------------------------------------------------- Lightning
class EpochClock(Callback):
    """Wall time of every training epoch, from one epoch's start to the next's (the last one to the end of fit).

    The device is synchronized at each mark only, so the epochs run as in training. The graph count at each mark
    shows when ``torch.compile`` compiled.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[float] = []
        self.graphs: list[int] = []

    def _mark(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.graphs.append(compile_graphs())

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark()

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark()

    @property
    def epoch_seconds(self) -> list[float]:
        """Seconds of each epoch, the warm-up epoch 0 included."""
        return [end - start for start, end in itertools.pairwise(self.marks)]


class TorchPruneMasks(Callback):
    """Apply the benchmark's mask with ``torch.nn.utils.prune`` at the start of fit, as ``ModelPruning`` applies its.

    ``ModelPruning`` only takes its own pruning functions and applies them at epoch ends; this installs the same
    re-parametrization (``prune.custom_from_mask``) with the same mask as the ``masked`` variant, before the first step.
    """

    def __init__(self, sparsity: float) -> None:
        self.sparsity = sparsity

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        apply_torch_prune(pl_module, sparse_masks(pl_module, self.sparsity))


class HostSyncCounter(Callback):
    """Count the synchronizing CUDA calls of ``steps`` whole training steps, with the line that made each.

    Uses ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every call that makes the host wait for the
    device (``.item()``, ``.cpu()``, ``torch.unique``, ``nonzero``, a blocking copy). The window runs from the start of
    step ``first_step`` to the start of step ``first_step + steps``, so it covers logging and progress-bar updates
    that Lightning does after ``on_train_batch_end``.
    """

    def __init__(self, first_step: int, steps: int) -> None:
        self.first_step = first_step
        self.steps = steps
        self.sources: Counter[str] = Counter()
        self.steps_seen = 0
        self._catcher: warnings.catch_warnings | None = None
        self._caught: list[warnings.WarningMessage] = []

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.first_step:
            self._start()
        elif step == self.first_step + self.steps:
            self._stop()
        if self._catcher is not None:
            self.steps_seen += 1

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def _start(self) -> None:
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def _stop(self) -> None:
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        self._catcher = None
        for caught in self._caught:
            if "synchroniz" in str(caught.message):
                self.sources[f"{_short_path(caught.filename)}:{caught.lineno}"] += 1


def _short_path(filename: str) -> str:
    """``site-packages/...`` and repository paths without the machine-specific prefix."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    repo = Path(__file__).resolve().parents[1]
    try:
        return str(Path(filename).resolve().relative_to(repo))
    except ValueError:
        return filename


def lightning_trainer(
    settings: Any, device: torch.device, log_dir: str, callbacks: list[Callback], **kwargs: Any
) -> Trainer:
    """A Trainer as the project's configs set it up (TensorBoard, logging every 50 steps), without checkpoints."""
    cuda = device.type == "cuda"
    progress_bar = any(isinstance(callback, RichProgressBar) for callback in callbacks)
    return Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if settings.precision == "bf16" else "32-true",
        logger=TensorBoardLogger(log_dir, name="suite"),
        log_every_n_steps=50,
        callbacks=callbacks,
        benchmark=cuda,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )


def quiet_progress_bar() -> RichProgressBar:
    """The CLI's progress bar, rendering into memory so that the benchmark's output stays readable."""
    return RichProgressBar(console_kwargs={"file": io.StringIO(), "force_terminal": True})


def fit_variant(
    settings: Any, variant: str, datamodule: CIFAR10DataModule, device: torch.device, log_dir: str
) -> EpochClock:
    """Fit one Lightning variant for a warm-up epoch and ``settings.epochs`` timed epochs."""
    compiled = variant.endswith("_compiled")
    base = variant.removesuffix("_compiled")
    model = new_model(settings, compiled)
    clock = EpochClock(device.type == "cuda")
    callbacks: list[Callback] = [clock]
    if base == "masked":
        callbacks.append(StaticSparse(target_sparsity=settings.sparsity, seed=SEED, log_chart=False))
    elif base == "torch_prune":
        callbacks.append(TorchPruneMasks(settings.sparsity))
    elif base == "dense_unvalidated_acc":
        model.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
    elif base == "dense_progress_bar":
        callbacks.append(quiet_progress_bar())
    elif base != "dense":
        raise ValueError(f"unknown Lightning variant {variant!r}")
    trainer = lightning_trainer(settings, device, log_dir, callbacks, max_epochs=1 + settings.epochs)
    trainer.fit(model, datamodule=datamodule)
    return clock


def run_lightning(
    settings: Any, variants: Sequence[str], datamodule: CIFAR10DataModule, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Fit every variant ``lightning_rounds`` times, interleaved; time the epochs after the warm-up epoch."""
    epochs: dict[str, list[float]] = {variant: [] for variant in variants}
    warmup: dict[str, list[float]] = {variant: [] for variant in variants}
    graphs: dict[str, list[int]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as log_dir:
        for variant in interleaved(variants, settings.lightning_rounds):
            clock = fit_variant(settings, variant, datamodule, device, log_dir)
            warmup[variant].append(clock.epoch_seconds[0])
            epochs[variant] += clock.epoch_seconds[1:]
            # Graphs compiled after the warm-up epoch, in this fit.
            graphs[variant].append(clock.graphs[-1] - clock.graphs[1])
    images = len(datamodule.train_split) if datamodule.train_split is not None else settings.train_images
    stats = {}
    for variant in variants:
        mean = statistics.fmean(epochs[variant])
        stats[variant] = {
            "epochs": len(epochs[variant]),
            "train_images": images,
            "mean_epoch_s": mean,
            "median_epoch_s": statistics.median(epochs[variant]),
            "warmup_epoch_s": statistics.fmean(warmup[variant]),
            "images_per_s": images / mean,
            "epoch_s": EPOCH_IMAGES / (images / mean),
            "graphs_compiled_after_warmup": sum(graphs[variant]),
        }
    return stats


def count_host_syncs(settings: Any, datamodule: CIFAR10DataModule, device: torch.device) -> dict[str, Any]:
    """Count host syncs over ``sync_steps`` steps of a masked run set up as the CLI sets it up (progress bar, logger).

    Raises:
        ValueError: On a device other than CUDA (a CPU never waits for itself).
    """
    if device.type != "cuda":
        raise ValueError(f"counting host syncs needs a CUDA device, got {device}.")
    first = settings.sync_first_step
    counter = HostSyncCounter(first, settings.sync_steps)
    callbacks: list[Callback] = [
        counter,
        StaticSparse(target_sparsity=settings.sparsity, seed=SEED, log_chart=False),
        quiet_progress_bar(),
    ]
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = lightning_trainer(
            settings, device, log_dir, callbacks, max_steps=first + settings.sync_steps + 1, max_epochs=-1
        )
        trainer.fit(new_model(settings, compiled=False), datamodule=datamodule)
    steps = counter.steps_seen
    total = sum(counter.sources.values())
    return {
        "steps": steps,
        "first_step": first,
        "log_every_n_steps": 50,
        "syncs": total,
        "syncs_per_step": total / steps if steps else None,
        "sources": dict(counter.sources.most_common()),
    }
