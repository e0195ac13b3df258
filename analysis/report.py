"""``python cli.py report RUN_DIR ...``: tables with 95% confidence intervals and sparsity–accuracy plots.

Every ``summary.json`` under the given directories (:mod:`analysis.summary`) becomes one point per method and
sparsity; a multi-round method (Lottery Ticket, Han et al., iterative pruning) gives one point per round. Points
with the same label and sparsity (the seeds of one setting) are aggregated into a mean with a Student-t confidence
interval (:mod:`analysis.stats`). Written to ``--out`` (atomically):

* ``results.md`` and ``results.csv``: mean ± 95% CI of every metric per method and sparsity;
* ``sparsity_accuracy.png``: test accuracy against the fraction of weights remaining (log axis), one line per
  method, with the CI as a band;
* ``layer_density.png``: the per-layer density of each method, at each sparsity level it reached;
* ``tensorboard/``: the same two figures and the Markdown table, for ``tensorboard --logdir``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.stats import MeanCI, mean_ci
from analysis.summary import read_summary
from pruning_callbacks.engine.io import atomic_write_bytes, atomic_write_text

METRICS: dict[str, tuple[str, float, int]] = {
    "test/acc": ("test acc (%)", 100.0, 2),
    "val/acc": ("val acc (%)", 100.0, 2),
    "test/ece": ("ECE (%)", 100.0, 2),
    "test/nll": ("NLL", 1.0, 3),
    "test/ood_auroc": ("OOD AUROC (%)", 100.0, 2),
    "test/adv_fgsm_acc": ("FGSM acc (%)", 100.0, 2),
    "test/adv_pgd_acc": ("PGD acc (%)", 100.0, 2),
    "size/sparse_mb": ("sparse size (MB)", 1.0, 2),
    "flops/sparse_forward": ("inference GFLOPs", 1e-9, 3),
    "flops/training_total": ("training PFLOPs", 1e-15, 2),
}
"""Metric key -> (column title, scale, decimals), in table order."""
SPARSITY_DECIMALS = 4
"""Points whose sparsity agrees to this many decimals belong to one setting (exact counts make seeds agree)."""


@dataclass
class Point:
    """One measured model: a run's final weights, or one round of a multi-round run."""

    label: str
    sparsity: float
    metrics: dict[str, float]
    source: str
    seed: int | None = None
    layer_density: dict[str, float] = field(default_factory=dict)


@dataclass
class Group:
    """The points of one label and sparsity (normally one per seed), aggregated."""

    label: str
    sparsity: float
    points: list[Point]

    @property
    def seeds(self) -> list[int | None]:
        """The seeds of the points, in order."""
        return [point.seed for point in self.points]

    def stat(self, metric: str, level: float = 0.95) -> MeanCI | None:
        """The mean and CI of ``metric`` over the points that have it, or ``None``."""
        values = [point.metrics[metric] for point in self.points if metric in point.metrics]
        return mean_ci(values, level) if values else None

    def layer_density(self) -> dict[str, float]:
        """The mean per-layer density of the points that recorded it."""
        with_layers = [point.layer_density for point in self.points if point.layer_density]
        if not with_layers:
            return {}
        return {name: sum(layers[name] for layers in with_layers) / len(with_layers) for name in with_layers[0]}


def find_summaries(paths: Iterable[str | os.PathLike[str]], filename: str = "summary.json") -> list[Path]:
    """Return every ``filename`` under ``paths`` (files or directories), sorted.

    Raises:
        FileNotFoundError: If a path does not exist.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"report: {path} does not exist; pass run directories or summary.json files")
        found.extend([path] if path.is_file() else sorted(path.rglob(filename)))
    return sorted(set(found))


def points_from_summary(summary: Mapping[str, Any], source: str) -> list[Point]:
    """Turn one ``summary.json`` into points: one per round for multi-round runs, else one."""
    label = str(summary.get("label") or "unknown")
    seed = summary.get("seed")
    fit = summary.get("fit") or {}
    test = summary.get("test") or {}
    final_metrics: dict[str, float] = {}
    final_metrics.update({k: v for k, v in (fit.get("metrics") or {}).items() if k.startswith("val/")})
    if test.get("completed") and (not fit or test.get("global_step") == fit.get("global_step")):
        final_metrics.update(test.get("metrics") or {})
    size, flops = summary.get("size") or {}, summary.get("flops") or {}
    if "sparse_mb" in size:
        final_metrics["size/sparse_mb"] = size["sparse_mb"]
    for key in ("sparse_forward", "training_total"):
        if key in flops:
            final_metrics[f"flops/{key}"] = flops[key]
    final_metrics = {k: float(v) for k, v in final_metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    sparsity_info = summary.get("sparsity") or {}
    layers = {name: 1.0 - float(layer["sparsity"]) for name, layer in (sparsity_info.get("per_layer") or {}).items()}
    rounds = summary.get("rounds") or []
    if not rounds:
        return [Point(label, float(sparsity_info.get("global", 0.0)), final_metrics, source, seed, layers)]
    points = []
    for index, row in enumerate(rounds):
        metrics = {
            key: float(row[column])
            for key, column in (("test/acc", "test_acc"), ("val/acc", "val_acc"))
            if row.get(column) is not None
        }
        last = index == len(rounds) - 1
        if last:
            # The final round's weights are the run's weights: they carry every other measurement too.
            metrics = {**final_metrics, **{k: v for k, v in metrics.items() if k not in final_metrics}}
        points.append(Point(label, float(row["sparsity"]), metrics, source, seed, layers if last else {}))
    return points


def collect_points(paths: Iterable[str | os.PathLike[str]]) -> list[Point]:
    """Read every ``summary.json`` under ``paths`` into points.

    Raises:
        FileNotFoundError: If a path does not exist or no summary is found.
    """
    files = find_summaries(paths)
    if not files:
        raise FileNotFoundError("report: no summary.json found under the given paths; run `python cli.py fit` first")
    points: list[Point] = []
    for path in files:
        points.extend(points_from_summary(read_summary(path), str(path.parent)))
    return points


def group_points(points: Sequence[Point]) -> list[Group]:
    """Group points by label and sparsity, sorted by label then sparsity."""
    groups: dict[tuple[str, float], list[Point]] = defaultdict(list)
    for point in points:
        groups[(point.label, round(point.sparsity, SPARSITY_DECIMALS))].append(point)
    return [Group(label, sparsity, members) for (label, sparsity), members in sorted(groups.items())]


def _present_metrics(groups: Sequence[Group]) -> list[str]:
    return [key for key in METRICS if any(group.stat(key) is not None for group in groups)]


def markdown_table(groups: Sequence[Group], level: float = 0.95) -> str:
    """A Markdown table: one row per method and sparsity, ``mean ± CI`` for each metric present."""
    metrics = _present_metrics(groups)
    header = ["method", "sparsity (%)", "n", *[METRICS[key][0] for key in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [group.label, f"{group.sparsity * 100:.2f}", str(len(group.points))]
        for key in metrics:
            stat = group.stat(key, level)
            _, scale, digits = METRICS[key]
            cells.append(stat.format(scale, digits) if stat is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nMean ± half-width of the {level:.0%} Student-t confidence interval over n runs (seeds); "
        "a single run shows its value alone.\n"
    )
    return "\n".join(lines) + "\n" + note


def csv_table(groups: Sequence[Group], level: float = 0.95) -> str:
    """CSV with ``mean``, ``ci_low``, ``ci_high``, ``std`` and ``n`` per metric, in unscaled units."""
    metrics = _present_metrics(groups)
    columns = ["method", "sparsity", "runs", "seeds"]
    for key in metrics:
        columns += [f"{key}:{part}" for part in ("mean", "ci_low", "ci_high", "std", "n")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for group in groups:
        row: list[Any] = [group.label, group.sparsity, len(group.points), " ".join(str(s) for s in group.seeds)]
        for key in metrics:
            stat = group.stat(key, level)
            if stat is None:
                row += ["", "", "", "", 0]
            else:
                row += [stat.mean, _blank_nan(stat.low), _blank_nan(stat.high), _blank_nan(stat.std), stat.n]
        writer.writerow(row)
    return buffer.getvalue()


def _blank_nan(value: float) -> float | str:
    return "" if math.isnan(value) else value


def sparsity_accuracy_figure(groups: Sequence[Group], metric: str = "test/acc", level: float = 0.95) -> Any:
    """Plot ``metric`` against the percentage of weights remaining (log axis), one line per method, CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title, scale, _ = METRICS.get(metric, (metric, 1.0, 2))
    figure, axis = plt.subplots(figsize=(7, 4.5))
    by_label: dict[str, list[tuple[float, MeanCI]]] = defaultdict(list)
    for group in groups:
        stat = group.stat(metric, level)
        if stat is not None:
            by_label[group.label].append((max(100.0 * (1 - group.sparsity), 1e-3), stat))
    for label, items in sorted(by_label.items()):
        items.sort(key=lambda item: -item[0])
        remaining = [item[0] for item in items]
        means = [item[1].mean * scale for item in items]
        line = axis.plot(remaining, means, marker="o", label=label)[0]
        lows = [(item[1].low if item[1].n > 1 else item[1].mean) * scale for item in items]
        highs = [(item[1].high if item[1].n > 1 else item[1].mean) * scale for item in items]
        if any(item[1].n > 1 for item in items):
            axis.fill_between(remaining, lows, highs, alpha=0.2, color=line.get_color(), linewidth=0)
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.set_xlabel("weights remaining (%), log scale")
    axis.set_ylabel(title)
    axis.set_title(f"{title} vs sparsity (bands: {level:.0%} CI over seeds)")
    axis.grid(True, which="both", alpha=0.3)
    if by_label:
        axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def layer_density_figure(groups: Sequence[Group], max_levels: int = 4) -> Any:
    """Plot each method's per-layer density, one panel per sparsity level (the ``max_levels`` highest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_layers = [group for group in groups if group.layer_density()]
    levels = sorted({round(group.sparsity, 2) for group in with_layers}, reverse=True)[:max_levels]
    panels = max(1, len(levels))
    figure, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels), squeeze=False)
    for axis, level in zip(axes[:, 0], levels, strict=False):
        names: list[str] = []
        for group in with_layers:
            if round(group.sparsity, 2) != level:
                continue
            density = group.layer_density()
            names = list(density)
            axis.plot(range(len(density)), [100 * value for value in density.values()], marker=".", label=group.label)
        axis.set_yscale("log")
        axis.set_ylabel("density (%)")
        axis.set_title(f"per-layer density at {level * 100:.0f}% global sparsity")
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels([name.removesuffix(".weight") for name in names], rotation=70, fontsize=6)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    if not levels:
        axes[0, 0].text(0.5, 0.5, "no per-layer data", ha="center", va="center")
    figure.tight_layout()
    return figure


def _save_figure(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    atomic_write_bytes(str(path), buffer.getvalue())
    plt.close(figure)


@dataclass(frozen=True)
class ReportFiles:
    """Where :func:`write_report` put its outputs."""

    markdown: Path
    csv: Path
    sparsity_accuracy: Path
    layer_density: Path
    tensorboard: Path | None


def write_report(
    paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    metric: str = "test/acc",
    level: float = 0.95,
    tensorboard: bool = True,
) -> ReportFiles:
    """Aggregate every ``summary.json`` under ``paths`` and write tables and plots into ``out_dir``.

    Args:
        paths: Run directories (searched recursively) or ``summary.json`` files.
        out_dir: Output directory, created if needed.
        metric: The metric of the sparsity plot.
        level: Confidence level of the intervals.
        tensorboard: Also write the figures and table as TensorBoard events under ``out_dir/tensorboard``.

    Raises:
        FileNotFoundError: If a path does not exist or holds no summary.
        ValueError: If ``level`` is not in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    groups = group_points(collect_points(paths))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = markdown_table(groups, level)
    files = ReportFiles(
        markdown=out / "results.md",
        csv=out / "results.csv",
        sparsity_accuracy=out / "sparsity_accuracy.png",
        layer_density=out / "layer_density.png",
        tensorboard=out / "tensorboard" if tensorboard else None,
    )
    atomic_write_text(str(files.markdown), markdown)
    atomic_write_text(str(files.csv), csv_table(groups, level))
    accuracy_figure = sparsity_accuracy_figure(groups, metric, level)
    density_figure = layer_density_figure(groups)
    if files.tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        # A report replaces the previous one: its old events file would show beside the new as a second run.
        if files.tensorboard.is_dir():
            for old in files.tensorboard.glob("events.out.tfevents.*"):
                old.unlink()
        writer = SummaryWriter(log_dir=str(files.tensorboard))
        writer.add_figure("report/sparsity_accuracy", accuracy_figure, close=False)
        writer.add_figure("report/layer_density", density_figure, close=False)
        writer.add_text("report/table", markdown)
        writer.close()
    _save_figure(accuracy_figure, files.sparsity_accuracy)
    _save_figure(density_figure, files.layer_density)
    return files


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python cli.py report``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python cli.py report",
        description="Aggregate summary.json files into tables with confidence intervals and sparsity plots.",
    )
    parser.add_argument("paths", nargs="+", help="run directories (searched recursively) or summary.json files")
    parser.add_argument("--out", default=None, help="output directory (default: <first path>/report)")
    parser.add_argument("--metric", default="test/acc", help="metric of the sparsity plot (default: test/acc)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level (default: 0.95)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    args = parser.parse_args(argv)
    first = Path(args.paths[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "report"
    try:
        files = write_report(args.paths, out, args.metric, args.level, tensorboard=not args.no_tensorboard)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(files.markdown.read_text(encoding="utf-8"))
    print(f"wrote {files.markdown}, {files.csv}, {files.sparsity_accuracy}, {files.layer_density}")
    if files.tensorboard is not None:
        print(f"TensorBoard: tensorboard --logdir {files.tensorboard}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
