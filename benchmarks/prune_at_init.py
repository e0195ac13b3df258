"""Benchmark: time to compute each prune-at-init mask on ResNet18, on whatever device is present.

Each method runs the same code ``PruneAtInit`` runs (:meth:`pruning_callbacks.init_pruning.MaskRecipe.masks`) on the
CIFAR ResNet18 at ``--width`` (64 is the full 11.2M-parameter network), at 90% sparsity:

* ``synflow``: 100 iterations, data-free (float64);
* ``snip`` and ``grasp``: one batch of ``--batch-size`` images (random pixels: the time does not depend on them);
* ``random_erk``: random scores, ERK layer-wise densities;
* ``random_snip_ratio``: SNIP's per-layer counts, positions drawn at random;
* ``magnitude``: global magnitude at initialization.

Usage::

    python benchmarks/prune_at_init.py              # full width, batch 128
    python benchmarks/prune_at_init.py --ci         # width 8, batch 16, 3 SynFlow iterations: a smoke test

Results go to ``benchmarks/results/prune_at_init_<device>.json`` and ``.md`` (``prune_at_init_ci_<device>`` with
``--ci``) unless ``--no-save``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, save_results
from lit_modules import ResNet18Classifier
from pruning_callbacks.init_pruning import MaskRecipe
from pruning_callbacks.parameters import prunable_parameters

METHODS = ("synflow", "snip", "grasp", "random_erk", "random_snip_ratio", "magnitude")


def recipe(method: str, args: argparse.Namespace) -> MaskRecipe:
    sparsity = args.sparsity
    if method == "synflow":
        return MaskRecipe(sparsity, "synflow", "global", iterations=args.synflow_iterations, input_shape=(3, 32, 32))
    if method in ("snip", "grasp"):
        return MaskRecipe(sparsity, method, "global", num_batches=args.num_batches)
    if method == "random_erk":
        return MaskRecipe(sparsity, "random", "layerwise", "erk")
    if method == "random_snip_ratio":
        return MaskRecipe(sparsity, "random", "layerwise", ratio_from="snip", num_batches=args.num_batches)
    return MaskRecipe(sparsity, "magnitude", "global")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-batches", type=int, default=1)
    parser.add_argument("--synflow-iterations", type=int, default=100)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method (the median is reported)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--ci", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.ci:
        args.width, args.batch_size, args.synflow_iterations, args.repeats = 8, 16, 3, 1
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    model = ResNet18Classifier(width=args.width).to(args.device)
    params = prunable_parameters(model)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(args.batch_size, 3, 32, 32, generator=generator).to(args.device),
            torch.randint(0, 10, (args.batch_size,), generator=generator).to(args.device),
        )
        for _ in range(args.num_batches)
    ]
    # Warm up kernels (first calls allocate and pick algorithms) so that the first method timed is not penalized.
    recipe("snip", args).masks(params, seed=0, module=model, batches=batches)
    MaskRecipe(args.sparsity, "synflow", "global", iterations=1, input_shape=(3, 32, 32)).masks(
        params, seed=0, module=model
    )
    seconds: dict[str, float] = {}
    sparsity: dict[str, float] = {}
    for method in args.methods:
        runs = []
        for _ in range(args.repeats):
            synchronize(args.device)
            start = time.perf_counter()
            masks = recipe(method, args).masks(params, seed=0, module=model, batches=batches)
            synchronize(args.device)
            runs.append(time.perf_counter() - start)
        seconds[method] = statistics.median(runs)
        sparsity[method] = masks.sparsity()
        print(f"{method}: {seconds[method]:.3f}s (sparsity {sparsity[method]:.4f})", flush=True)
    settings = {
        key: getattr(args, key)
        for key in ("width", "batch_size", "num_batches", "synflow_iterations", "sparsity", "repeats")
    }
    settings["threads"] = torch.get_num_threads()
    result = {
        "benchmark": "prune_at_init",
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": settings,
        "parameters": sum(p.numel() for p in model.parameters()),
        "prunable_weights": sum(p.numel() for p in params.values()),
        "seconds": seconds,
        "sparsity": sparsity,
        "command": "python benchmarks/prune_at_init.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    lines = [
        f"# Prune-at-init mask time ({result['device_name']}, {args.device})",
        "",
        f"ResNet18 width {args.width} ({result['parameters']:,} parameters, {result['prunable_weights']:,} prunable), "
        f"target sparsity {args.sparsity}; settings {json.dumps(settings)}; torch {torch.__version__}.",
        f"Command: `{result['command'].strip()}`",
        "",
        "| method | seconds | sparsity reached |",
        "|---|---|---|",
    ]
    for method in args.methods:
        label = f"{method} ({args.synflow_iterations} iterations)" if method == "synflow" else method
        lines.append(f"| {label} | {seconds[method]:.3f} | {sparsity[method]:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        save_results("prune_at_init", result, text, ci=args.ci, device=args.device)
    return result


if __name__ == "__main__":
    main()
