"""Micro-benchmark: time of one masked training step over one dense step, on whatever device is present.

Three ways of training the same ResNet18 are timed in one process, interleaved so that drift hits all equally:

* ``dense``: plain forward, backward and SGD step;
* ``masked``: the same, plus this project's engine (:class:`pruning_callbacks.apply.MaskApplier`), which zeroes
  pruned weights and their momentum in place after each optimizer step with two ``torch._foreach_mul_``;
* ``torch_prune``: the same masks applied the way Lightning's ``ModelPruning`` does it
  (``torch.nn.utils.prune`` re-parametrization: ``weight = weight_orig * weight_mask`` in a forward pre-hook).

Usage::

    python benchmarks/masked_step.py                 # full width, batch 128 (use on a GPU)
    python benchmarks/masked_step.py --ci            # a few steps of a narrow network, as a smoke test

Results go to ``benchmarks/results/masked_step_<device>.json`` and ``.md`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, save_results
from lit_modules.resnet import ResNet18
from pruning_callbacks.apply import MaskApplier
from pruning_callbacks.masks import Masks
from pruning_callbacks.parameters import prunable_parameters
from pruning_callbacks.scores import ScoreContext, compute_scores
from pruning_callbacks.selection import prune_to_sparsity


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--precision", choices=["32", "bf16"], default=None, help="default: bf16 on CUDA, else 32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--ci", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.ci:
        args.width, args.batch_size, args.steps, args.rounds, args.warmup = 8, 16, 3, 1, 1
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if cuda else "32")
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    return args


def build(args: argparse.Namespace, variant: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ResNet18(width=args.width).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    if variant == "dense":
        return model, optimizer
    params = prunable_parameters(model)
    dense = Masks.dense(params)
    scores = compute_scores("random", ScoreContext(params, dense, seed=0))
    masks = prune_to_sparsity(scores, dense, args.sparsity, scope="layerwise", distribution="erk")
    if variant == "masked":
        applier = MaskApplier(params, masks)
        applier.apply_()
        applier.attach(optimizer)
        return model, optimizer
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        prune.custom_from_mask(modules[name.removesuffix(".weight")], "weight", mask)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return model, optimizer


def time_steps(args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    generator = torch.Generator(device=args.device).manual_seed(1)
    x = torch.randn(args.batch_size, 3, 32, 32, device=args.device, generator=generator)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device, generator=generator)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    times = []
    for _ in range(steps):
        if device_type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type, dtype=dtype, enabled=args.precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device_type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    variants = ["dense", "masked", "torch_prune"]
    built = {variant: build(args, variant) for variant in variants}
    for model, optimizer in built.values():
        time_steps(args, model, optimizer, args.warmup)
    samples: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.rounds):
        for variant in variants:
            model, optimizer = built[variant]
            samples[variant] += time_steps(args, model, optimizer, args.steps)
    mean = {variant: statistics.fmean(values) for variant, values in samples.items()}
    median = {variant: statistics.median(values) for variant, values in samples.items()}
    result = {
        "benchmark": "masked_step",
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": {
            key: getattr(args, key)
            for key in ("width", "batch_size", "steps", "rounds", "warmup", "sparsity", "precision", "channels_last")
        },
        "mean_step_s": mean,
        "median_step_s": median,
        "masked_over_dense": mean["masked"] / mean["dense"],
        "torch_prune_over_dense": mean["torch_prune"] / mean["dense"],
        "command": "python benchmarks/masked_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    table = [
        f"# Masked step benchmark ({result['device_name']}, {args.device})",
        "",
        f"Settings: {json.dumps(result['settings'])}; torch {torch.__version__}.",
        f"Command: `{result['command'].strip()}`",
        "",
        "| variant | mean step (ms) | median step (ms) | / dense |",
        "|---|---|---|---|",
    ]
    for variant in variants:
        table.append(
            f"| {variant} | {mean[variant] * 1e3:.2f} | {median[variant] * 1e3:.2f} | "
            f"{mean[variant] / mean['dense']:.3f} |"
        )
    text = "\n".join(table) + "\n"
    print(text)
    if not args.no_save:
        save_results("masked_step", result, text, ci=args.ci, device=args.device)
    return result


if __name__ == "__main__":
    main()
