"""Inference latency of channel-slimmed ResNet18s against the dense and the 90% unstructured network, on one device.

What is compared, all at the same width, from one seeded initialization:

* ``dense``: the CIFAR ResNet18;
* ``unstructured_90``: the same network with 90% of its Conv/Linear weights zeroed by global magnitude (what every
  unstructured method here produces); the kernels are dense, so it should run as fast as ``dense``, and no faster;
* ``inner_30/50/70``: :class:`~pruning_callbacks.FilterPruning`'s default (Li et al. 2017): that share of
  the filters of the first convolution of every block, by L1 norm, removed by :mod:`analysis.slim`;
* ``stage_30/50/70``: ``FilterPruning(layers: stage)``: the same plus that share of every stage's residual-stream
  channels, chosen per stage by the L1 norms summed over the stage's writers and removed from all of them.

Every model runs in eval mode under ``torch.inference_mode``, at batch 1 and batch 128, in fp32 (NCHW) and in bf16
(CPU autocast with channels_last, the fast path where oneDNN has bf16). The measurement interleaves: each round
times every (model, batch, precision) cell once, ``--repeats`` forward passes each, and a cell's latency is the
median over rounds, so drifting clocks and a busy neighbour affect every model alike.

    python benchmarks/latency.py                 # width 64, 3 rounds: writes results/latency_cpu.{json,md}
    python benchmarks/latency.py --ci --no-save  # the CI-sized smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor, nn

from analysis.flops import layer_flops
from analysis.slim import slim_state_dict
from benchmarks.common import environment, save_results
from lit_modules.resnet import ResNet18, SlimResNet18, resnet18_from_state_dict
from pruning_callbacks.engine.channels import (
    channel_groups,
    expand_channel_masks,
    filter_l1_norms,
    layer_channel_masks,
    residual_streams,
    stream_channel_masks,
)
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.selection import prune_to_sparsity

SHARES = (0.3, 0.5, 0.7)
PRECISIONS = ("fp32", "bf16")
CI_SETTINGS = {"width": 4, "batch_sizes": [1, 4], "rounds": 1, "repeats": 1}


@torch.no_grad()
def channel_pruned(base: ResNet18, share: float, streams: bool) -> nn.Module:
    """``base`` pruned as ``FilterPruning(layers: inner | stage)`` prunes it at ``share``, then slimmed.

    The same engine calls as the callback's pruning round: L1 filter norms, the per-layer rule for the block-inner
    channels and, with ``streams``, the per-stream rule for the residual streams; the channel masks expanded to the
    parameters and applied; :func:`analysis.slim.slim_state_dict` on the result.
    """
    model = ResNet18(width=base.conv1.out_channels)
    model.load_state_dict(base.state_dict())
    groups = [group for group in channel_groups(model) if group.producer is not None]
    inner = [group for group in groups if group.inner]
    scores = filter_l1_norms(model, groups)
    current = Masks.dense(scores)
    channels = dict(current.items())
    channels.update(
        layer_channel_masks(
            {g.key: scores[g.key] for g in inner}, Masks.dense({g.key: scores[g.key] for g in inner}), share
        ).items()
    )
    if streams:
        found = residual_streams(model, [group for group in groups if not group.inner])
        by_stream = stream_channel_masks(scores, current, found, share)
        channels.update({group.key: by_stream[group.key] for stream in found for group in stream})
    params = dict(model.named_parameters())
    for name, keep in expand_channel_masks(model, groups, channels).items():
        params[name].mul_(keep)
    return SlimResNet18.from_state_dict(slim_state_dict(model.state_dict()).state_dict)


@torch.no_grad()
def unstructured(base: ResNet18, sparsity: float) -> nn.Module:
    """``base`` with ``sparsity`` of its Conv/Linear weights zeroed by global magnitude (dense kernels)."""
    model = ResNet18(width=base.conv1.out_channels)
    model.load_state_dict(base.state_dict())
    params = prunable_parameters(model)
    masks = prune_to_sparsity({n: p.abs() for n, p in params.items()}, Masks.dense(params), sparsity, scope="global")
    for name, param in params.items():
        param.mul_(masks[name])
    return model


def build_models(width: int, seed: int = 0) -> dict[str, nn.Module]:
    """Every compared model, from one seeded initialization."""
    torch.manual_seed(seed)
    base = ResNet18(width=width)
    models: dict[str, nn.Module] = {"dense": base, "unstructured_90": unstructured(base, 0.9)}
    for share in SHARES:
        models[f"inner_{round(share * 100)}"] = channel_pruned(base, share, streams=False)
    for share in SHARES:
        models[f"stage_{round(share * 100)}"] = channel_pruned(base, share, streams=True)
    return {name: model.eval() for name, model in models.items()}


@contextlib.contextmanager
def _precision(name: str) -> Iterator[None]:
    if name == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def _time(model: nn.Module, x: Tensor, precision: str, repeats: int) -> float:
    """Median seconds of one forward pass over ``repeats`` timed passes."""
    times = []
    with torch.inference_mode(), _precision(precision):
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(width: int, batch_sizes: Sequence[int], rounds: int, repeats: int) -> dict[str, Any]:
    """Time every (model, batch, precision) cell, interleaved over ``rounds``; return the medians and the ratios."""
    models = build_models(width)
    variants = {
        (name, precision): (
            model if precision == "fp32" else _channels_last_copy(model),
            torch.channels_last if precision == "bf16" else torch.contiguous_format,
        )
        for name, model in models.items()
        for precision in PRECISIONS
    }
    inputs = {
        batch: torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)) for batch in batch_sizes
    }
    flops = {name: layer_flops(model).total for name, model in models.items()}  # dense kernels: zeros count too
    samples: dict[tuple[str, int, str], list[float]] = {}
    for (_, precision), (model, memory_format) in variants.items():  # warm-up: oneDNN picks its kernels
        for x in inputs.values():
            _time(model, x.contiguous(memory_format=memory_format), precision, 1)
    for _ in range(rounds):
        for batch, x in inputs.items():
            for precision in PRECISIONS:
                for name in models:
                    model, memory_format = variants[(name, precision)]
                    seconds = _time(model, x.contiguous(memory_format=memory_format), precision, repeats)
                    samples.setdefault((name, batch, precision), []).append(seconds)
    cells = []
    for (name, batch, precision), times in samples.items():
        dense = statistics.median(samples[("dense", batch, precision)])
        median = statistics.median(times)
        cells.append(
            {
                "model": name,
                "batch_size": batch,
                "precision": precision,
                "median_s": median,
                "speedup_over_dense": dense / median,
                "parameters": sum(p.numel() for p in models[name].parameters()),
                "nonzero_parameters": sum(int(p.count_nonzero()) for p in models[name].parameters()),
                "forward_flops": flops[name],
                "flops_reduction": flops["dense"] / flops[name],
            }
        )
    return {"cells": cells, "models": list(models)}


def _channels_last_copy(model: nn.Module) -> nn.Module:
    """An independent copy of ``model`` in channels_last memory format (the bf16 cells run it)."""
    return resnet18_from_state_dict(model.state_dict()).eval().to(memory_format=torch.channels_last)


def markdown(result: dict[str, Any], command: str) -> str:
    """The results as a Markdown table, one row per model, one column per (batch, precision)."""
    settings = result["settings"]
    columns = [(batch, precision) for batch in settings["batch_sizes"] for precision in PRECISIONS]
    by_cell = {(c["model"], c["batch_size"], c["precision"]): c for c in result["cells"]}
    header = (
        "| model | nonzero parameters | FLOPs per image | " + " | ".join(f"batch {b} {p}" for b, p in columns) + " |"
    )
    lines = [
        f"# Inference latency, width {settings['width']}, {result['environment']['device_name']}, "
        f"{result['environment']['cpu_threads']} threads",
        "",
        f"Command: `{command}`. Median latency of one forward pass (ms), and in brackets the speed-up over dense "
        f"in the same column; {settings['rounds']} interleaved rounds of {settings['repeats']} passes.",
        "",
        header,
        "|" + "---|" * (3 + len(columns)),
    ]
    for name in result["models"]:
        first = by_cell[(name, columns[0][0], columns[0][1])]
        row = [
            name,
            f"{first['nonzero_parameters']:,}",
            f"{first['forward_flops'] / 1e6:.0f}M ({first['flops_reduction']:.2f}x fewer)",
        ]
        for batch, precision in columns:
            cell = by_cell[(name, batch, precision)]
            row.append(f"{cell['median_s'] * 1000:.1f} ({cell['speedup_over_dense']:.2f}x)")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=_positive, default=64)
    parser.add_argument("--batch-sizes", type=_positive, nargs="+", default=[1, 128])
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.add_argument("--repeats", type=_positive, default=3, help="timed passes per cell and round (median)")
    parser.add_argument("--threads", type=_positive, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--ci", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, and (unless ``--no-save``) write ``results/latency_cpu.{json,md}``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dict(CI_SETTINGS) if args.ci else {
        "width": args.width, "batch_sizes": list(args.batch_sizes), "rounds": args.rounds, "repeats": args.repeats
    }  # fmt: skip
    result = run(**settings)
    result["settings"] = settings
    result["environment"] = environment("cpu")
    command = "python benchmarks/latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["command"] = command.strip()
    table = markdown(result, result["command"])
    print(table)
    if not args.no_save:
        save_results("latency", result, table, ci=args.ci, device="cpu")
    return result


if __name__ == "__main__":
    main()
