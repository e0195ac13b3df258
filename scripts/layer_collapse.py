"""Layer collapse (Tanaka et al. 2020, https://arxiv.org/abs/2006.05467, section 4 and Fig. 3), measured here.

A pruning method at initialization *collapses* a layer when it removes every weight of it, which disconnects the
network. For each method this script finds the largest compression ratio ``ρ = total / remaining`` of the
full-width CIFAR ResNet18's prunable weights at which every layer still keeps a weight, on the grid
``10^(k/4)``, by bisection (a mask that collapses at ``ρ`` is taken to collapse above it too), and, since a ResNet
survives losing a layer on one path of a block, also the largest at which the network stays *connected* (a path of
kept weights from input to output: Tanaka et al.'s positive synaptic flow). The methods run
through the same engine call as ``PruneAtInit`` (:class:`~pruning_callbacks.engine.recipes.MaskRecipe`), all global,
with the per-layer floor off (``min_weights_per_layer: 0``, as in the papers): random, magnitude, SNIP and GraSP on
one batch of 128 training images, SynFlow with 100 iterations. The upper bound is one weight per layer.

    python scripts/layer_collapse.py --data-dir /tmp/cifar10 --out docs/results/cpu

writes ``layer_collapse.json``, ``layer_collapse.md`` and ``layer_collapse.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from datamodules import CIFAR10DataModule
from datamodules.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from lit_modules.resnet import ResNet18
from pruning_callbacks.engine.io import atomic_write_bytes, atomic_write_text
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.recipes import MaskRecipe

METHODS = ("random", "magnitude", "snip", "grasp", "synflow")
GRID_STEP = 0.25
"""Decades between grid points: ρ = 10^(k × GRID_STEP)."""


def connected(model: ResNet18, masks: Mapping[str, torch.Tensor]) -> bool:
    """Whether a path of kept weights joins the input to the output: positive synaptic flow through ``|θ| ⊙ mask``.

    The masked network with every weight replaced by its absolute value, biases at 0 and every BatchNorm an identity
    (scale 1, shift 0, running statistics 0 and 1), run in float64 on an all-ones image: ReLUs pass positive values,
    so the output is positive exactly when some input-output path keeps all its weights (Tanaka et al.'s R > 0).
    """
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for name, param in probe.named_parameters():
            if name in masks:
                param.copy_(param.abs() * masks[name].to(param.dtype))
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)  # BatchNorm scales
        for module in probe.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
        return bool(probe(torch.ones(1, 3, 32, 32, dtype=torch.float64)).sum() > 0)


class Collapse:
    """Masks of one method at grid points, computed once each, and the two collapse criteria on them."""

    def __init__(self, method: str, model: ResNet18, batch: tuple[torch.Tensor, torch.Tensor], seed: int) -> None:
        self.method, self.model, self.batch, self.seed = method, model, batch, seed
        self.params = prunable_parameters(model)
        self.total = sum(p.numel() for p in self.params.values())
        self.cache: dict[int, tuple[bool, bool]] = {}
        self.emptied: dict[int, list[str]] = {}

    def at(self, k: int) -> tuple[bool, bool]:
        """(a layer is emptied, the network is disconnected) at compression ``10^(k × GRID_STEP)``."""
        if k not in self.cache:
            keep = max(1, round(self.total / 10 ** (k * GRID_STEP)))
            recipe = MaskRecipe(
                target_sparsity=1 - keep / self.total,
                score=self.method,
                scope="global",
                min_weights_per_layer=0,
                input_shape=(3, 32, 32) if self.method == "synflow" else None,
            )
            masks = recipe.masks(
                self.params, seed=self.seed, key="layer_collapse", module=self.model, batches=[self.batch]
            )
            self.emptied[k] = [name for name, count in masks.remaining_per_layer().items() if count == 0]
            self.cache[k] = (bool(self.emptied[k]), not connected(self.model, masks))
        return self.cache[k]

    def largest(self, criterion: int, top: int) -> tuple[int, int | None]:
        """Bisect ``k = 0..top``: the largest grid point where ``criterion`` (0 emptied, 1 disconnected) is false."""
        low, high = 0, top + 1  # low: known fine (no pruning); high: known failed, or past the grid
        while high - low > 1:
            middle = (low + high) // 2
            if self.at(middle)[criterion]:
                high = middle
            else:
                low = middle
        return low, (high if high <= top else None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every method and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 (image folder or cifar-10-batches-py)")
    parser.add_argument("--out", default="docs/results/cpu")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model = ResNet18(width=args.width)
    data = CIFAR10DataModule(args.data_dir, batch_size=128, val_size=5000, num_workers=0, download=False)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))[:2]  # uint8; the module normalizes on transfer
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    batch = ((images.float() / 255 - mean) / std, labels)
    params = prunable_parameters(model)
    sizes = {name: p.numel() for name, p in params.items()}
    total = sum(sizes.values())
    bound = math.log10(total / len(sizes))  # every layer keeps exactly one weight
    top = math.floor(bound / GRID_STEP)
    results: dict[str, Any] = {}
    for method in args.methods:
        start = time.perf_counter()
        search = Collapse(method, model, batch, args.seed)
        every_layer, first_emptied = search.largest(0, top)
        connected_up_to, first_disconnected = search.largest(1, top)
        results[method] = {
            "every_layer_kept_exponent": every_layer * GRID_STEP,
            "first_layer_emptied_exponent": None if first_emptied is None else first_emptied * GRID_STEP,
            "connected_exponent": connected_up_to * GRID_STEP,
            "first_disconnected_exponent": None if first_disconnected is None else first_disconnected * GRID_STEP,
            "checked": {
                f"{k * GRID_STEP:g}": {"layer_emptied": e, "disconnected": d}
                for k, (e, d) in sorted(search.cache.items())
            },
            "seconds": time.perf_counter() - start,
            "command": "python scripts/layer_collapse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        print(
            f"{method}: every layer kept up to 10^{every_layer * GRID_STEP:g}, connected up to "
            f"10^{connected_up_to * GRID_STEP:g}",
            flush=True,
        )
    target = Path(args.out)
    previous = target / "layer_collapse.json"
    if previous.is_file() and set(args.methods) != set(METHODS):
        # A run of some methods updates those and keeps the others' earlier results (same settings only).
        earlier = json.loads(previous.read_text())
        if (earlier.get("width"), earlier.get("seed")) == (args.width, args.seed):
            results = {**{m: r for m, r in earlier["methods"].items() if m not in results}, **results}
            results = {m: results[m] for m in METHODS if m in results}
    out = {
        "width": args.width,
        "seed": args.seed,
        "prunable_weights": total,
        "layers": len(sizes),
        "smallest_layer": min(sizes.values()),
        "upper_bound_exponent": bound,
        "grid_step_decades": GRID_STEP,
        "command": "python scripts/layer_collapse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "methods": results,
    }
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / "layer_collapse.json", json.dumps(out, indent=2) + "\n")
    atomic_write_text(target / "layer_collapse.md", markdown(out))
    plot(out, target / "layer_collapse.png")
    return out


def markdown(out: dict[str, Any]) -> str:
    """The table: each method's largest compression with every layer kept, and with the network connected."""

    def first(value: float | None) -> str:
        return "none up to the bound" if value is None else f"10^{value:g}"

    used = sorted({str(result.get("command", out["command"])) for result in out["methods"].values()})
    commands = ", ".join(f"`{command}`" for command in used)

    lines = [
        f"# Layer collapse: CIFAR ResNet18, width {out['width']}, {out['prunable_weights']:,} prunable weights "
        f"in {out['layers']} layers",
        "",
        f"Commands: {commands}. Grid 10^(k/4), bisected; the bound (one weight per layer) is "
        f"10^{out['upper_bound_exponent']:.2f}. *Every layer kept*: no Conv/Linear layer loses all its weights. "
        "*Connected*: a path of kept weights still joins input and output (positive synaptic flow); a ResNet can "
        "lose a whole layer on one path of a block and stay connected through the other.",
        "",
        "| method | every layer kept up to | first layer emptied at | connected up to | first disconnected at "
        "| seconds |",
        "|---|---|---|---|---|---|",
    ]
    for method, result in out["methods"].items():
        emptied = first(result["first_layer_emptied_exponent"])
        lines.append(
            f"| {method} | 10^{result['every_layer_kept_exponent']:g} | {emptied} "
            f"| 10^{result['connected_exponent']:g} | {first(result['first_disconnected_exponent'])} | "
            f"{result['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(out: dict[str, Any], path: Path) -> None:
    """A bar per method (log scale), with the one-weight-per-layer bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(out["methods"])
    positions = range(len(methods))
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for offset, key, label, color in (
        (-0.2, "every_layer_kept_exponent", "every layer kept", "#4c72b0"),
        (0.2, "connected_exponent", "network connected", "#dd8452"),
    ):
        values = [out["methods"][m][key] for m in methods]
        axis.bar([p + offset for p in positions], values, width=0.4, color=color, label=label)
    axis.set_xticks(list(positions), methods)
    axis.axhline(out["upper_bound_exponent"], color="k", linestyle="--", linewidth=1, label="one weight per layer")
    axis.set_ylabel("largest log10 compression")
    axis.set_title(f"Layer collapse at initialization (ResNet18, width {out['width']})")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


if __name__ == "__main__":
    main()
