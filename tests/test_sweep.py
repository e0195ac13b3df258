"""``sweep``: the plan of runs, the commands, skipping finished runs, resuming partial ones, and the report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.summary import is_complete, read_summary
from analysis.sweep import Run, commands, main, parse_setting, plan_runs, run_status, split_values
from tests.helpers import REPO, tiny_overrides


def test_values_split_on_top_level_commas_only():
    assert split_values("0.9,0.99") == ["0.9", "0.99"]
    assert split_values("[1,2], [3,4],x") == ["[1,2]", "[3,4]", "x"]
    with pytest.raises(ValueError, match="unbalanced"):
        split_values("[1,2")
    with pytest.raises(ValueError, match="empty value"):
        split_values("1,,2")


def test_settings_parse_and_bad_ones_are_named():
    assert parse_setting("trainer.callbacks.target_sparsity=0.9,0.99") == (
        "trainer.callbacks.target_sparsity",
        ["0.9", "0.99"],
    )
    assert parse_setting("--model.lr=0.1") == ("model.lr", ["0.1"])
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        parse_setting("model.lr")
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        parse_setting("bad key=1")


def test_the_plan_is_the_product_with_seeds_fastest(tmp_path):
    runs = plan_runs(tmp_path, "snip", [0, 1], [("trainer.callbacks.target_sparsity", ["0.9", "0.99"])])
    assert [(run.index, run.seed, run.settings[0][1]) for run in runs] == [
        (0, 0, "0.9"), (1, 1, "0.9"), (2, 0, "0.99"), (3, 1, "0.99")
    ]  # fmt: skip
    assert runs[3].directory == tmp_path / "snip" / "target_sparsity=0.99" / "seed1"
    assert runs[3].name == "target_sparsity=0.99 seed=1"
    with pytest.raises(ValueError, match="repeated"):
        plan_runs(tmp_path, "x", [0, 0], [])
    with pytest.raises(ValueError, match="repeats a key"):
        plan_runs(tmp_path, "x", [0], [("a", ["1"]), ("a", ["2"])])


def test_status_and_commands_follow_what_is_on_disk(tmp_path):
    run = Run(0, 7, (("model.lr", "0.1"),), tmp_path / "run")
    assert run_status(run) == "new"
    fit, test = commands(run, "configs/x.yaml", "x", ["--data.data_dir", "/d"], "new")
    assert fit[2] == "fit" and "--ckpt_path" not in fit
    assert fit[fit.index("--seed_everything") + 1] == "7" and fit[fit.index("--model.lr") + 1] == "0.1"
    assert fit[-2:] == ["--data.data_dir", "/d"] and test[2] == "test"
    assert test[-2:] == ["--ckpt_path", str(tmp_path / "run" / "checkpoints" / "last.ckpt")]

    (run.directory / "checkpoints").mkdir(parents=True)
    (run.directory / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run_status(run) == "partial"
    assert commands(run, "c.yaml", "x", [], "partial")[0][-2:] == ["--ckpt_path", "last"]
    (run.directory / "summary.json").write_text(json.dumps({"fit": {"completed": True, "global_step": 5}}))
    assert run_status(run) == "fitted" and [c[2] for c in commands(run, "c.yaml", "x", [], "fitted")] == ["test"]
    (run.directory / "summary.json").write_text(
        json.dumps({"fit": {"completed": True, "global_step": 5}, "test": {"completed": True, "global_step": 5}})
    )
    assert run_status(run) == "done"


def test_bad_arguments_exit_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.yaml")])
    assert "is not a file" in capsys.readouterr().err
    config = str(REPO / "configs" / "snip.yaml")
    with pytest.raises(SystemExit):
        main(["--config", config, "--seeds", "0", "1", "--index", "5", "--root", str(tmp_path)])
    assert "--index must be in [0, 1]" in capsys.readouterr().err


def test_dry_run_prints_commands_and_list_prints_runs(tmp_path, capsys):
    config = str(REPO / "configs" / "snip.yaml")
    assert main(["--config", config, "--seeds", "0", "1", "--root", str(tmp_path), "--dry-run", "--", "--x", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count(" fit ") == 2 and out.count(" test ") == 2 and "--x 1" in out
    assert not (tmp_path / "snip" / "sweep.json").exists()
    assert main(["--config", config, "--seeds", "0", "1", "--root", str(tmp_path), "--list"]) == 0
    assert "   1  new" in capsys.readouterr().out


def test_one_command_runs_seeds_and_sparsities_then_reports(cifar_dir, tmp_path):
    """Two sparsities x two seeds of tiny real runs, then the report's table and plot; a re-run skips them all."""
    root = tmp_path / "sweeps"
    extra = [arg for arg in tiny_overrides(cifar_dir, tmp_path / "unused") if arg]
    cut = extra.index("--trainer.default_root_dir")
    extra = extra[:cut] + extra[cut + 2 :]  # the sweep chooses each run's directory
    command = [
        sys.executable, str(REPO / "cli.py"), "sweep", "--config", str(REPO / "configs" / "quickstart_sparse.yaml"),
        "--seeds", "0", "1", "--set", "trainer.callbacks.target_sparsity=0.5,0.9", "--root", str(root), "--report",
        "--", *extra, "--data.ood_size", "64", "--robustness.adv_samples", "16",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    summaries = sorted((root / "quickstart_sparse").rglob("summary.json"))
    assert len(summaries) == 4 and all(is_complete(read_summary(path)) for path in summaries)
    assert {read_summary(path)["seed"] for path in summaries} == {0, 1}
    manifest = json.loads((root / "quickstart_sparse" / "sweep.json").read_text())
    assert [run["status"] for run in manifest["runs"]] == ["done"] * 4

    report = root / "quickstart_sparse" / "report"
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert [(row["method"], round(float(row["sparsity"]), 3), row["runs"]) for row in rows] == [
        ("quickstart_sparse", 0.5, "2"), ("quickstart_sparse", 0.9, "2")
    ]  # fmt: skip
    assert all(row["test/acc:ci_low"] and row["test/ece:mean"] for row in rows)
    assert "| quickstart_sparse | 90.00 | 2 |" in (report / "results.md").read_text()
    image = np.asarray(Image.open(report / "sparsity_accuracy.png").convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done, skipped") == 4
    assert Path(report / "results.md").exists()


def test_seed_placeholders_and_single_valued_settings(tmp_path):
    checkpoint = ("trainer.callbacks.dense_checkpoint", ["runs/dense/seed{seed}/last.ckpt"])
    settings = [checkpoint, ("model.lr", ["0.1", "0.2"])]
    runs = plan_runs(tmp_path, "han", [3], settings)
    # The single-valued setting is not in the directory name; {seed} is the run's seed.
    assert runs[1].directory == tmp_path / "han" / "lr=0.2" / "seed3"
    assert runs[1].settings[0] == ("trainer.callbacks.dense_checkpoint", "runs/dense/seed3/last.ckpt")
    fit, test = commands(runs[0], "c.yaml", "han", ["--data.data_dir", "/d{seed}"], "new", max_time_s=3725.5)
    assert fit[fit.index("--data.data_dir") + 1] == "/d3"
    assert fit[2] == "fit" and "--then_test" in fit and test[2] == "test" and "--then_test" not in test
    assert fit[fit.index("--trainer.max_time") + 1] == "00:01:02:05"
