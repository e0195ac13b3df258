"""The CPU study's eight claims: a table, a verdict and a plot for each, from the runs' ``summary.json`` files.

    python scripts/study_claims.py docs/results/cpu        # writes docs/results/cpu/claims.md and claims/*.png

Each claim compares runs of ``scripts/cpu_study.sh`` (labels as that script sets them) over the seeds present. A
table cell is the mean ± the half-width of the 95% Student-t interval over seeds (a single seed shows its value).
Verdicts, as the study defines them:

* a comparison "A beats B" *holds* when A's interval lies entirely above B's, *does not hold* when it lies entirely
  below, and is *inconclusive* when the intervals overlap (or there are fewer than two seeds);
* "within 2 points of dense" looks at the per-seed differences (dense − method): it holds when their interval lies
  at or under 2 points, does not hold when it lies above, else inconclusive; a threshold on a measured quantity
  (Han's sparsity, Early-Bird's drawing epoch) is read the same way.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import find_summaries
from analysis.stats import MeanCI, mean_ci
from analysis.summary import read_summary
from pruning_callbacks.engine.io import atomic_write_bytes, atomic_write_text

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
LEVEL = 0.95
PROTOCOL_EPOCHS = 10
"""Epochs of a training phase in the study (configs/study/)."""


@dataclass
class Run:
    """One run's final result and its rounds."""

    label: str
    seed: int
    test_acc: float | None
    sparsity: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)

    def at(self, sparsity: float) -> float | None:
        """Test accuracy of the round that ended at ``sparsity`` (the final weights for the last round)."""
        for index, row in enumerate(self.rounds):
            if abs(float(row["sparsity"]) - sparsity) < 1e-3:
                if index == len(self.rounds) - 1:
                    return self.test_acc
                return None if row.get("test_acc") is None else float(row["test_acc"])
        return self.test_acc if not self.rounds and abs(self.sparsity - sparsity) < 1e-3 else None


def load_runs(root: Path) -> dict[str, dict[int, Run]]:
    """Label -> seed -> run, for every finished and tested ``summary.json`` under ``root``."""
    runs: dict[str, dict[int, Run]] = {}
    for path in find_summaries([root]):
        summary = read_summary(path)
        test = summary.get("test") or {}
        if not test.get("completed"):
            continue
        callbacks = (summary.get("method") or {}).get("callbacks") or []
        outcome = callbacks[0].get("outcome", {}) if callbacks else {}
        run = Run(
            label=str(summary.get("label")),
            seed=int(summary.get("seed") or 0),
            test_acc=(test.get("metrics") or {}).get("test/acc"),
            sparsity=float((summary.get("sparsity") or {}).get("global", 0.0)),
            rounds=list(summary.get("rounds") or []),
            outcome=dict(outcome or {}),
        )
        runs.setdefault(run.label, {})[run.seed] = run
    return runs


def stat(values: Sequence[float]) -> MeanCI | None:
    """Mean and CI of ``values`` (``None`` when empty)."""
    return mean_ci(values, LEVEL) if values else None


def cell(value: MeanCI | None, scale: float = 100.0, digits: int = 2) -> str:
    """A table cell: mean ± half-width, the value alone for one seed, ``n/a`` for none."""
    if value is None:
        return "n/a"
    text = value.format(scale, digits)
    return f"{text} (n={value.n})"


def beats(a: MeanCI | None, b: MeanCI | None) -> str:
    """The verdict of "a beats b" from two intervals."""
    if a is None or b is None:
        return f"{OPEN} (missing runs)"
    if a.n < 2 or b.n < 2:
        return f"{OPEN} (n={min(a.n, b.n)}: a verdict needs two seeds or more)"
    if a.low > b.high:
        return HOLDS
    if a.high < b.low:
        return FAILS
    return f"{OPEN} (the intervals overlap)"


def at_most(value: MeanCI | None, limit: float) -> str:
    """The verdict of "value ≤ limit" from its interval."""
    if value is None:
        return f"{OPEN} (missing runs)"
    if value.n < 2:
        return f"{OPEN} (n=1: a verdict needs two seeds or more)"
    if value.high <= limit:
        return HOLDS
    if value.low > limit:
        return FAILS
    return f"{OPEN} (the interval contains {limit:g})"


class Study:
    """The runs of one study directory, and the accessors the claims use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = load_runs(root)

    def accuracy(self, label: str, sparsity: float | None = None) -> dict[int, float]:
        """Seed -> test accuracy of ``label`` (at the round ending at ``sparsity``, or the final weights)."""
        result = {}
        for seed, run in self.runs.get(label, {}).items():
            value = run.test_acc if sparsity is None else run.at(sparsity)
            if value is not None:
                result[seed] = float(value)
        return result

    def stat(self, label: str, sparsity: float | None = None) -> MeanCI | None:
        """Mean and CI over seeds of ``label``'s test accuracy."""
        return stat(list(self.accuracy(label, sparsity).values()))

    def gap(self, dense: str, method: str, sparsity: float | None = None) -> MeanCI | None:
        """Mean and CI of the per-seed difference dense − method, in accuracy."""
        a, b = self.accuracy(dense), self.accuracy(method, sparsity)
        return stat([a[seed] - b[seed] for seed in sorted(set(a) & set(b))])


def table(rows: Sequence[tuple[str, str]], header: tuple[str, str] = ("run", "test acc (%)")) -> list[str]:
    """A two-column Markdown table."""
    return [f"| {header[0]} | {header[1]} |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def bar_plot(
    path: Path, title: str, entries: Sequence[tuple[str, MeanCI | None]], ylabel: str = "test acc (%)"
) -> None:
    """A bar per entry with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in entries]
    means = [value.mean * 100 if value else math.nan for _, value in entries]
    errors = [value.half_width * 100 if value and value.n > 1 else 0.0 for _, value in entries]
    figure, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(names)), 3.4))
    axis.bar(names, means, yerr=errors, capsize=4, color="#4c72b0")
    finite = [m for m in means if math.isfinite(m)]
    if finite:
        axis.set_ylim(max(0.0, min(finite) - 8), min(100.0, max(finite) + 6))
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.tick_params(axis="x", labelsize=8, rotation=20)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=140)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def claims(study: Study, out: Path) -> tuple[str, list[dict[str, str]]]:
    """Every claim's section of ``claims.md`` and the verdict list."""
    lines: list[str] = []
    verdicts: list[dict[str, str]] = []
    plots = out / "claims"

    def section(
        number: int, title: str, rows: list[tuple[str, str]], verdict_lines: list[tuple[str, str]], plot: str
    ) -> None:
        lines.extend([f"## {number}. {title}", "", *table(rows), ""])
        for claim, verdict in verdict_lines:
            lines.append(f"- {claim}: **{verdict}**")
            verdicts.append({"claim": f"{number}. {claim}", "verdict": verdict})
        lines.extend(["", f"![{title}](claims/{plot})", ""])

    # 1. Lottery tickets at 84%.
    s = 0.84
    late, init, reinit = (study.stat(label, s) for label in ("lth_late_rewind", "lth_rewind_init", "lth_reinit"))
    entries = [
        ("late rewind (epoch 1)", late),
        ("rewind to θ0", init),
        ("random reinit", reinit),
        ("dense", study.stat("dense")),
    ]
    section(
        1,
        "Lottery tickets at 84% sparsity (2 rounds of 60%, global magnitude)",
        [(name, cell(value)) for name, value in entries],
        [
            ("late rewinding beats the same masks re-initialized", beats(late, reinit)),
            ("rewinding to θ0 beats the re-initialized masks", beats(init, reinit)),
        ],
        "lth.png",
    )
    bar_plot(plots / "lth.png", "Lottery tickets at 84%", entries)

    # 2. One-shot vs iterative at 90%.
    entries, checks = [], []
    for criterion in ("magnitude", "random"):
        one, it = study.stat(f"oneshot_{criterion}", 0.9), study.stat(f"iterative_{criterion}", 0.9)
        entries += [(f"one-shot {criterion}", one), (f"iterative {criterion}", it)]
        checks.append((f"iterative beats one-shot ({criterion})", beats(it, one)))
    section(
        2,
        "One-shot vs iterative at 90% (from the same dense run)",
        [(name, cell(value)) for name, value in entries],
        checks,
        "oneshot_iterative.png",
    )
    bar_plot(plots / "oneshot_iterative.png", "One-shot vs iterative at 90%", entries)

    # 3. Layer collapse.
    collapse_file = study.root / "layer_collapse.json"
    if collapse_file.is_file():
        collapse = json.loads(collapse_file.read_text())
        methods = collapse["methods"]
        rows = [
            (name, f"10^{m['connected_exponent']:g} connected, 10^{m['every_layer_kept_exponent']:g} every layer kept")
            for name, m in methods.items()
        ]

        def furthest(key: str) -> str:
            mine = methods["synflow"][key]
            others = max(m[key] for name, m in methods.items() if name != "synflow")
            return HOLDS if mine > others else (f"{OPEN} (tied)" if mine == others else FAILS)

        checks = [
            (
                "SynFlow stays connected (a path from input to output) to the highest compression",
                furthest("connected_exponent"),
            ),
            ("SynFlow keeps every layer non-empty to the highest compression", furthest("every_layer_kept_exponent")),
        ]
        lines.extend(
            [
                f"## 3. Layer collapse (full width, {collapse['prunable_weights']:,} weights)",
                "",
                *table(rows, ("method", "largest compression")),
                "",
            ]
        )
        for claim, verdict in checks:
            lines.append(f"- {claim}: **{verdict}**")
            verdicts.append({"claim": f"3. {claim}", "verdict": verdict})
        lines.extend(["", "![layer collapse](layer_collapse.png)", ""])

    # 4. Pruning at initialization at 90%.
    labels = {
        "SynFlow": "synflow",
        "SNIP": "snip",
        "GraSP": "grasp",
        "random ERK": "random_erk",
        "random uniform": "random_uniform",
    }
    values = {name: study.stat(label, 0.9) for name, label in labels.items()}
    checks = [
        (f"{name} beats random uniform", beats(values[name], values["random uniform"]))
        for name in ("SynFlow", "SNIP", "GraSP")
    ]
    checks += [
        (f"{name} beats random ERK", beats(values[name], values["random ERK"])) for name in ("SynFlow", "SNIP", "GraSP")
    ]
    section(4, "Pruning at initialization, 90%", [(n, cell(v)) for n, v in values.items()], checks, "pai.png")
    bar_plot(plots / "pai.png", "Pruning at initialization, 90%", list(values.items()))

    # 5. Dynamic sparse training at 90% ERK.
    values = {name: study.stat(name.lower(), 0.9) for name in ("RigL", "SET", "static")}
    checks = [
        ("RigL beats SET", beats(values["RigL"], values["SET"])),
        ("SET beats static", beats(values["SET"], values["static"])),
    ]
    section(5, "Dynamic sparse training, 90% ERK", [(n, cell(v)) for n, v in values.items()], checks, "dst.png")
    bar_plot(plots / "dst.png", "RigL, SET and static at 90% (ERK)", list(values.items()))

    # 6. Random ERK and width.
    widths = {8: ("dense_w8", "random_erk_w8"), 16: ("dense", "random_erk"), 32: ("dense_w32", "random_erk_w32")}
    gaps = {w: study.gap(d, r, 0.9) for w, (d, r) in widths.items()}
    rows = [(f"width {w}: dense − random ERK 90% (points)", cell(g)) for w, g in gaps.items()]
    erk, uniform = study.stat("random_erk", 0.9), study.stat("random_uniform", 0.9)
    rows += [("width 16: random ERK 90%", cell(erk)), ("width 16: random uniform 90%", cell(uniform))]
    checks = [
        ("the gap shrinks from width 8 to 16", beats(gaps[8], gaps[16])),
        ("the gap shrinks from width 16 to 32", beats(gaps[16], gaps[32])),
        ("ERK beats uniform (width 16)", beats(erk, uniform)),
    ]
    section(6, "Random pruning and width (90%)", rows, checks, "width.png")
    bar_plot(
        plots / "width.png",
        "Accuracy gap dense − random ERK at 90%",
        [(f"width {w}", g) for w, g in gaps.items()],
        ylabel="gap (points)",
    )

    # 7. Han et al.
    han = study.runs.get("han", {})
    sparsity = stat([run.sparsity for run in han.values()])
    gap = study.gap("dense", "han")
    rows = [
        ("final sparsity (%)", cell(sparsity)),
        ("dense − Han (points)", cell(gap)),
        ("Han", cell(study.stat("han"))),
    ]
    below = None if sparsity is None else MeanCI(-sparsity.mean, sparsity.half_width, sparsity.std, sparsity.n)
    checks = [
        ("quality 1.0 for 7 iterations reaches ≥ 85% sparsity", at_most(below, -0.85)),
        ("within 2 points of the dense run", at_most(gap, 0.02)),
    ]
    section(7, "Han et al. (quality 1.0, 7 iterations)", rows, checks, "han.png")
    bar_plot(
        plots / "han.png", "Han et al. against dense", [("dense", study.stat("dense")), ("Han", study.stat("han"))]
    )

    # 8. Early-Bird.
    bird = study.runs.get("early_bird", {})
    drawn = [run.outcome.get("drawn_after_epochs") for run in bird.values()]
    share = stat([epoch / PROTOCOL_EPOCHS if epoch is not None else 1.0 for epoch in drawn])
    gap = study.gap("dense", "early_bird")
    rows = [
        ("ticket drawn after (epochs of 10)", ", ".join("not drawn" if e is None else str(e) for e in drawn) or "n/a"),
        ("dense − retrained ticket (points)", cell(gap)),
        ("retrained ticket", cell(study.stat("early_bird"))),
    ]
    checks = [
        ("the ticket is drawn in the first 30% of training", at_most(share, 0.3)),
        ("the retrained ticket is within 2 points of dense", at_most(gap, 0.02)),
    ]
    section(8, "Early-Bird tickets (50% of the channels)", rows, checks, "early_bird.png")
    bar_plot(
        plots / "early_bird.png",
        "Early-Bird against dense",
        [("dense", study.stat("dense")), ("Early-Bird", study.stat("early_bird"))],
    )

    seeds = sorted({seed for by_seed in study.runs.values() for seed in by_seed})
    head = [
        "# CPU study: the eight claims",
        "",
        f"Generated by `python scripts/study_claims.py {study.root}` from {sum(len(v) for v in study.runs.values())} "
        f"finished runs (seeds {', '.join(map(str, seeds)) or 'none'}). Test accuracy on the JPEG copy of CIFAR-10, "
        "mean ± 95% Student-t half-width over seeds (a single seed shows its value alone).",
        "",
        "| claim | verdict |",
        "|---|---|",
        *(f"| {v['claim']} | {v['verdict']} |" for v in verdicts),
        "",
    ]
    return "\n".join(head + lines), verdicts


def main(argv: list[str] | None = None) -> int:
    """Write ``claims.md``, ``claims.json`` and the plots into the study directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the study directory (docs/results/cpu, or runs/study)")
    parser.add_argument("--out", default=None, help="where to write (default: the study directory)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    out = Path(args.out) if args.out else root
    text, verdicts = claims(Study(root), out)
    atomic_write_text(out / "claims.md", text)
    atomic_write_text(out / "claims.json", json.dumps(verdicts, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
