"""Benchmark: the CPU fast path (bf16 autocast with channels_last) against fp32, as ratios measured in one process.

Three variants of the same training step of the project's ResNet18 (:class:`~lit_modules.ResNet18Classifier`:
forward, cross-entropy, backward and the project's SGD step), each on its own copy of the same initial weights and on
the same fixed batch:

* ``fp32``: float32 in the default contiguous (NCHW) layout, what a CPU run trained in before;
* ``bf16_channels_last``: ``torch.autocast("cpu", dtype=torch.bfloat16)``, which is what Lightning's ``bf16-mixed``
  does on a CPU, with the model and its input in channels_last: what ``cli.py`` picks when a config leaves
  ``trainer.precision`` unset and the CPU's oneDNN computes bf16 (:func:`lit_modules.precision.auto_precision`);
* ``bf16_contiguous``: the same autocast in the contiguous layout, to show why channels_last comes with it.

The variants are interleaved in rounds within one process, the order reversed every other round, so that drift and
other load on a shared machine hit all three alike. Each variant first runs ``warmup`` untimed steps (oneDNN picks and
caches its kernels there), then each round times ``steps`` steps of every variant. Reported: the median step time of
each variant and fp32's median over each bf16 variant's (above 1: bf16 is faster).

Usage::

    python benchmarks/cpu_precision.py                                  # width 16, batch 128, 20 steps per variant
    python benchmarks/cpu_precision.py --width 64 --rounds 3 --steps 1  # the full-width network (~6 s per fp32 step)
    python benchmarks/cpu_precision.py --ci --no-save                   # a few steps of a tiny network (smoke test)

Results go to ``benchmarks/results/cpu_precision.json`` and ``.md`` (``cpu_precision_ci.*`` with ``--ci``) unless
``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from lit_modules import ResNet18Classifier
from lit_modules.precision import auto_precision, cpu_computes_bf16
from pruning_callbacks.engine.io import atomic_write_text


@dataclass(frozen=True)
class Variant:
    """One way of running the training step."""

    bf16: bool
    channels_last: bool
    description: str


VARIANTS = {
    "fp32": Variant(bf16=False, channels_last=False, description="fp32, contiguous"),
    "bf16_channels_last": Variant(bf16=True, channels_last=True, description="bf16 autocast + channels_last"),
    "bf16_contiguous": Variant(bf16=True, channels_last=False, description="bf16 autocast, contiguous"),
}
SETTINGS = ("width", "batch_size", "warmup", "rounds", "steps", "threads")
CI_SETTINGS = {"width": 4, "batch_size": 8, "warmup": 1, "rounds": 2, "steps": 1}
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage (64: the full ResNet18)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before the first round")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds over the variants")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant in each round")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--ci", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.ci:
        for key, value in CI_SETTINGS.items():
            setattr(args, key, value)
    for key in ("width", "batch_size", "rounds", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    return args


class Runner:
    """One variant's model, optimizer and batch, and the time of every step it ran.

    Args:
        variant: How to run the step.
        width: The ResNet18's first-stage width.
        images: The batch, ``(N, 3, 32, 32)`` float32, contiguous.
        labels: Its labels, ``(N,)``.
    """

    def __init__(self, variant: Variant, width: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        torch.manual_seed(SEED)  # the same initial weights for every variant
        self.variant = variant
        self.model = ResNet18Classifier(width=width, channels_last=variant.channels_last)
        self.model.configure_model()  # puts the weights in channels_last; forward() converts the input
        self.model.train()
        self.optimizer = self.model.configure_optimizers()["optimizer"]
        self.images, self.labels = images, labels
        self.times: list[float] = []
        self.last_loss = math.nan

    def step(self, timed: bool) -> None:
        """One training step, timed from the forward to the end of the optimizer step (a CPU runs synchronously)."""
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant.bf16):
            loss = F.cross_entropy(self.model(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        elapsed = time.perf_counter() - start
        if timed:
            self.times.append(elapsed)
        self.last_loss = float(loss.detach())


def cpu_name() -> str | None:
    """The processor's name as torch's CPU capability report gives it (``Intel Xeon``), where torch has one."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    name = get_capabilities().get("cpu_name") if get_capabilities is not None else None
    return str(name) if name else None


def markdown(result: dict[str, Any]) -> str:
    """The result as a short Markdown report."""
    settings = result["settings"]
    environment = result["environment"]
    lines = [
        f"# CPU precision benchmark ({result['cpu_name'] or environment['device_name']}, "
        f"{environment['cpu_threads']} threads)",
        "",
        f"Settings: {json.dumps(settings)}; torch {environment['torch']}.",
        f"Command: `{result['command']}`",
        "",
        f"ResNet18 training step (forward, cross-entropy, backward, SGD), width {settings['width']}, batch "
        f"{settings['batch_size']}; {result['steps_timed_per_variant']} timed steps per variant, interleaved in "
        f"{settings['rounds']} rounds in one process.",
        "",
        "| variant | median step (s) | mean step (s) | fp32 / variant (medians) |",
        "|---|---|---|---|",
    ]
    for name, variant in VARIANTS.items():
        speedup = result["median_step_s"]["fp32"] / result["median_step_s"][name]
        lines.append(
            f"| {variant.description} | {result['median_step_s'][name]:.4f} | {result['mean_step_s'][name]:.4f} "
            f"| {speedup:.2f}x |"
        )
    native = "computes bf16 natively" if result["cpu_computes_bf16"] else "has no native bf16"
    lines += [
        "",
        f"This CPU's oneDNN {native}: a `cli.py` run that leaves `trainer.precision` unset trains in "
        f"`{result['auto_precision']}` here.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the report and, unless ``--no-save``, write it to ``benchmarks/results``.

    Returns:
        The result (what the JSON file holds).
    """
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randn(args.batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator)
    runners = {name: Runner(variant, args.width, images, labels) for name, variant in VARIANTS.items()}
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step(timed=False)
    for round_index in range(args.rounds):
        order = list(runners.values())
        for runner in order if round_index % 2 == 0 else reversed(order):
            for _ in range(args.steps):
                runner.step(timed=True)
    median = {name: statistics.median(runner.times) for name, runner in runners.items()}
    mean = {name: statistics.fmean(runner.times) for name, runner in runners.items()}
    choice = auto_precision("cpu")
    result: dict[str, Any] = {
        "benchmark": "cpu_precision",
        "environment": common.environment("cpu"),
        "cpu_name": cpu_name(),
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "cpu_computes_bf16": cpu_computes_bf16(),
        "auto_precision": choice.precision if choice is not None else None,
        "steps_timed_per_variant": args.rounds * args.steps,
        "median_step_s": median,
        "mean_step_s": mean,
        "speedup_over_fp32": {name: median["fp32"] / median[name] for name in VARIANTS if name != "fp32"},
        "final_loss": {name: runner.last_loss for name, runner in runners.items()},
        "command": " ".join(["python benchmarks/cpu_precision.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    text = markdown(result)
    print(text)
    if not args.no_save:
        stem = common.RESULTS / ("cpu_precision_ci" if args.ci else "cpu_precision")
        atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        atomic_write_text(stem.with_suffix(".md"), text)
    return result


if __name__ == "__main__":
    main()
