"""Benchmark: RigL's training-step time over static sparse training, averaged over steps including update steps.

Both variants are the real callbacks (:class:`pruning_callbacks.RigL` and
:class:`pruning_callbacks.StaticSparse`, same initial 90%-sparse ERK mask) on the same ResNet18, in a real
``Trainer.fit`` with a TensorBoard logger, fed pre-built batches from memory so that data loading does not drown the
difference. Each step is timed from ``on_train_batch_start`` to ``on_train_batch_end`` (with a device synchronization
on a GPU). The timed window holds exactly ``periods * update_every`` steps after ``warmup``, so it contains exactly
``periods`` RigL updates: the mean is the average cost per step of the schedule (``t_end`` is 1 here so that updates
go on through the window). Variants are interleaved over ``rounds`` so that drift hits both equally. Target: RigL
within 5% of static sparse training.

Two figures are reported: the end-to-end ratio of mean step times, and RigL's own hook time (every update and every
per-step schedule check) spread over all steps, over the median static step. On a shared or throttled machine whole
steps stall at random and the first figure is noisy; the second is not, and the two agree on a quiet machine.

Usage::

    python benchmarks/rigl_step.py                                   # full width, batch 128, update_every 100 (GPU)
    python benchmarks/rigl_step.py --width 32 --batch-size 64        # CPU-sized, still update_every 100
    python benchmarks/rigl_step.py --ci                              # a few steps of a tiny network (smoke test)

Results go to ``benchmarks/results/rigl_step_<device>.json`` and ``.md`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, save_results
from lit_modules import ResNet18Classifier
from pruning_callbacks.callbacks.dynamic import RigL, StaticSparse

VARIANTS = ("static", "rigl")
SETTINGS = (
    "width", "batch_size", "update_every", "periods", "rounds", "warmup", "sparsity", "precision", "channels_last",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--update-every", type=int, default=100, help="steps between RigL updates")
    parser.add_argument("--periods", type=int, default=2, help="timed update periods (update_every steps each)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the variants")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each run")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--precision", choices=["32", "bf16"], default=None, help="default: bf16 on CUDA, else 32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--ci", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.ci:
        args.width, args.batch_size, args.update_every, args.periods, args.rounds, args.warmup = 4, 8, 3, 2, 1, 1
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if cuda else "32")
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    return args


class Batches(Dataset):
    """``length`` ready-made batches, cycling over four distinct ones."""

    def __init__(self, batch_size: int, length: int) -> None:
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(4, batch_size, 3, 32, 32, generator=generator)
        self.y = torch.randint(0, 10, (4, batch_size), generator=generator)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index % 4], self.y[index % 4]


class StepTimer(Callback):
    """Wall time of every training step, from batch start to batch end, and the step index of each."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.times: list[float] = []
        self.steps: list[int] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.steps.append(trainer.global_step)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


class TimedRigL(RigL):
    """RigL that also times its own hook, separating the cost of update steps from the check on the other steps."""

    def __init__(self, *args: Any, cuda: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cuda = cuda
        self.update_seconds: list[float] = []
        self.check_seconds: list[float] = []

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        updates = self.regrowth_updates
        if self.cuda and self.schedule is not None and self.schedule.is_update_step(trainer.global_step):
            torch.cuda.synchronize()  # only the update's own work is timed, not the backward still queued
        start = time.perf_counter()
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        if self.regrowth_updates != updates:
            if self.cuda:
                torch.cuda.synchronize()
            self.update_seconds.append(time.perf_counter() - start)
        else:
            self.check_seconds.append(time.perf_counter() - start)


def run(args: argparse.Namespace, variant: str, log_dir: str) -> tuple[list[float], StaticSparse]:
    """Train one variant for ``warmup + periods * update_every`` steps; return its timed steps and its callback."""
    total = args.warmup + args.periods * args.update_every
    cuda = args.device.startswith("cuda")
    torch.manual_seed(0)
    model = ResNet18Classifier(width=args.width, lr=0.05, lr_scheduler="constant", channels_last=args.channels_last)
    if variant == "rigl":
        method: StaticSparse = TimedRigL(
            target_sparsity=args.sparsity, update_every=args.update_every, t_end=1.0, seed=0, cuda=cuda
        )
    else:
        method = StaticSparse(target_sparsity=args.sparsity, seed=0)
    timer = StepTimer(cuda=cuda)
    trainer = Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        max_steps=total,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        logger=TensorBoardLogger(log_dir, name=variant, version=""),
        log_every_n_steps=50,
        callbacks=[method, timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train_dataloaders=DataLoader(Batches(args.batch_size, total), batch_size=None))
    if isinstance(method, TimedRigL):
        assert method.schedule is not None
        scheduled = sum(method.schedule.is_update_step(step) for step in range(total))
        assert method.regrowth_updates == scheduled, "RigL did not update on every scheduled step"
        timed = sum(method.schedule.is_update_step(step) for step in timer.steps[args.warmup :])
        assert timed == args.periods, f"the timed window holds {timed} updates, expected {args.periods}"
    return timer.times[args.warmup :], method


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    update_seconds: list[float] = []
    check_seconds: list[float] = []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                times, method = run(args, variant, log_dir)
                samples[variant] += times
                if isinstance(method, TimedRigL):
                    update_seconds += method.update_seconds
                    check_seconds += method.check_seconds
    mean = {variant: statistics.fmean(values) for variant, values in samples.items()}
    median = {variant: statistics.median(values) for variant, values in samples.items()}
    ratio = mean["rigl"] / mean["static"]
    # The same overhead from the hook's own time (every update and every per-step check, spread over all steps) over
    # the median static step: insensitive to the stalls a shared machine adds to whole steps.
    hook_per_step = (sum(update_seconds) + sum(check_seconds)) / (len(update_seconds) + len(check_seconds))
    result: dict[str, Any] = {
        "benchmark": "rigl_step",
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "steps_timed_per_variant": len(samples["rigl"]),
        "update_steps_timed": args.periods * args.rounds,
        "mean_step_s": mean,
        "median_step_s": median,
        "rigl_over_static": ratio,
        "overhead_percent": (ratio - 1.0) * 100.0,
        "update_mean_s": statistics.fmean(update_seconds),
        "check_mean_s": statistics.fmean(check_seconds) if check_seconds else 0.0,
        "hook_overhead_percent": hook_per_step / median["static"] * 100.0,
        "target_percent": 5.0,
        "command": "python benchmarks/rigl_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    table = [
        f"# RigL step benchmark ({result['device_name']}, {args.device})",
        "",
        f"Settings: {json.dumps(result['settings'])}; torch {torch.__version__}.",
        f"Command: `{result['command'].strip()}`",
        "",
        f"{result['steps_timed_per_variant']} timed steps per variant, including {result['update_steps_timed']} RigL "
        "update steps (one every update_every steps).",
        "",
        "| variant | mean step (ms) | median step (ms) | / static (means) |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        ratio_to_static = mean[variant] / mean["static"]
        table.append(f"| {variant} | {mean[variant] * 1e3:.2f} | {median[variant] * 1e3:.2f} | {ratio_to_static:.3f} |")
    table += [
        "",
        f"- RigL overhead, end to end, averaged over steps: {result['overhead_percent']:+.2f}% (target: at most +5%).",
        f"- RigL's own hook: {result['update_mean_s'] * 1e3:.2f} ms per update, {result['check_mean_s'] * 1e6:.1f} us "
        f"per other step; spread over all steps, {result['hook_overhead_percent']:+.2f}% of the median static step.",
    ]
    text = "\n".join(table) + "\n"
    print(text)
    if not args.no_save:
        save_results("rigl_step", result, text, ci=args.ci, device=args.device)
    return result


if __name__ == "__main__":
    main()
