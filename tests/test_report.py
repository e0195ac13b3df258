"""``report``: summaries -> points -> groups -> Markdown/CSV tables with CIs, PNG plots and TensorBoard events."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.report import collect_points, group_points, main, markdown_table, points_from_summary, write_report
from analysis.stats import mean_ci

LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "linear.weight"]


def summary(label, seed, sparsity, test_acc, *, rounds=None, fit_step=100, test_step=100, layers=None):
    per_layer = {name: {"sparsity": s, "remaining": 1, "total": 10} for name, s in (layers or {}).items()}
    data = {
        "format_version": 1, "label": label, "seed": seed,
        "sparsity": {"global": sparsity, "per_layer": per_layer},
        "size": {"dense_mb": 44.7, "sparse_mb": 44.7 * (1 - sparsity) + 1.5},
        "flops": {"dense_forward": 1.1e9, "sparse_forward": 1.1e9 * (1 - sparsity), "training_total": 1e15},
        "fit": {"completed": True, "global_step": fit_step, "metrics": {"val/acc": test_acc + 0.01}},
        "test": {"completed": True, "global_step": test_step, "metrics": {"test/acc": test_acc, "test/ece": 0.05}},
    }  # fmt: skip
    if rounds is not None:
        data["rounds"] = rounds
    return data


def write(root: Path, name: str, data: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "summary.json").write_text(json.dumps(data))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    accuracies = {("snip", 0.9): [0.93, 0.94, 0.92], ("snip", 0.99): [0.90, 0.91, 0.89], ("random", 0.9): [0.92, 0.93]}
    for (label, sparsity), values in accuracies.items():
        for seed, acc in enumerate(values):
            layers = dict(zip(LAYERS, [sparsity / 2, sparsity, sparsity * 0.9], strict=True))
            write(root, f"{label}/{sparsity}/seed{seed}", summary(label, seed, sparsity, acc, layers=layers))
    rounds = [
        {"round": 0, "sparsity": 0.0, "val_acc": 0.95, "test_acc": 0.94},
        {"round": 1, "sparsity": 0.2, "val_acc": 0.955, "test_acc": 0.945},
        {"round": 2, "sparsity": 0.36, "val_acc": 0.95, "test_acc": 0.935},
    ]
    write(root, "lth/seed0", summary("lth", 0, 0.36, 0.936, rounds=rounds, layers=dict.fromkeys(LAYERS, 0.36)))
    return root


def test_a_multi_round_summary_gives_one_point_per_round_and_the_last_carries_the_test_metrics():
    rounds = [{"round": 0, "sparsity": 0.0, "val_acc": 0.5, "test_acc": 0.4},
              {"round": 1, "sparsity": 0.5, "val_acc": 0.6, "test_acc": None}]  # fmt: skip
    points = points_from_summary(summary("lth", 3, 0.5, 0.55, rounds=rounds, layers={"a": 0.5}), "x")
    assert [p.sparsity for p in points] == [0.0, 0.5] and all(p.seed == 3 for p in points)
    assert points[0].metrics == {"test/acc": 0.4, "val/acc": 0.5} and not points[0].layer_density
    assert points[1].metrics["test/acc"] == 0.55 and points[1].metrics["test/ece"] == 0.05
    assert points[1].layer_density == {"a": 0.5}


def test_a_test_of_other_weights_than_fit_ended_with_is_ignored():
    point = points_from_summary(summary("m", 0, 0.9, 0.9, fit_step=100, test_step=50), "x")[0]
    assert "test/acc" not in point.metrics and point.metrics["val/acc"] == pytest.approx(0.91)


def test_groups_and_tables_hold_mean_and_ci(runs):
    groups = group_points(collect_points([runs]))
    keys = [(g.label, g.sparsity, len(g.points)) for g in groups]
    assert keys == [("lth", 0.0, 1), ("lth", 0.2, 1), ("lth", 0.36, 1), ("random", 0.9, 2), ("snip", 0.9, 3),
                    ("snip", 0.99, 3)]  # fmt: skip
    snip = groups[4]
    assert snip.stat("test/acc").format(scale=100) == mean_ci([0.93, 0.94, 0.92]).format(scale=100) == "93.00 ± 2.48"
    table = markdown_table(groups)
    assert "| snip | 90.00 | 3 | 93.00 ± 2.48 |" in table
    assert "| lth | 20.00 | 1 | 94.50 |" in table  # one run: the value alone
    assert "95% Student-t confidence interval" in table


def test_write_report_writes_tables_plots_and_tensorboard(runs, tmp_path):
    files = write_report([runs], tmp_path / "report")
    rows = list(csv.DictReader(io.StringIO(files.csv.read_text())))
    snip99 = next(row for row in rows if row["method"] == "snip" and float(row["sparsity"]) == 0.99)
    ci = mean_ci([0.90, 0.91, 0.89])
    assert float(snip99["test/acc:mean"]) == pytest.approx(ci.mean)
    assert float(snip99["test/acc:ci_low"]) == pytest.approx(ci.low)
    assert float(snip99["test/acc:ci_high"]) == pytest.approx(ci.high)
    assert snip99["runs"] == "3" and snip99["seeds"] == "0 1 2"
    for png in (files.sparsity_accuracy, files.layer_density):
        image = np.asarray(Image.open(png).convert("RGB"))
        assert image.shape[0] > 300 and image.shape[1] > 500
        # Not a blank canvas: lines and bands in several colours.
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    assert list(files.tensorboard.glob("events.out.tfevents.*"))


def test_the_command_line_prints_the_table_and_fails_clearly(runs, tmp_path, capsys):
    assert main([str(runs), "--out", str(tmp_path / "out"), "--no-tensorboard"]) == 0
    assert "| snip | 99.00 | 3 |" in capsys.readouterr().out
    assert not (tmp_path / "out" / "tensorboard").exists()
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no summary.json found" in capsys.readouterr().err
