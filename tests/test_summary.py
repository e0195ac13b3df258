"""``summary.json``: every fit and test writes it, with sparsity, sizes, FLOPs, metrics, rounds; it survives resume."""

from __future__ import annotations

import json
import os

import pytest

from analysis.flops import layer_flops, sparse_forward_flops
from analysis.summary import RunSummary, is_complete, read_summary
from cli import main
from tests.helpers import REPO, tiny_overrides

SPARSE = str(REPO / "configs" / "quickstart_sparse.yaml")


def fit_and_test(config, cifar_dir, root, *extra, epochs=1):
    fit = main(["fit", "--config", config, *tiny_overrides(cifar_dir, root, epochs=epochs), *extra])
    last = str(root / "checkpoints" / "last.ckpt")
    overrides = tiny_overrides(cifar_dir, root, epochs=epochs)
    test = main(["test", "--config", config, *overrides, *extra, "--ckpt_path", last])
    return fit, test, read_summary(root / "summary.json")


def test_then_test_tests_in_the_fit_process_exactly_as_a_test_command(cifar_dir, tmp_path):
    """``fit --then_test`` (what the sweep runs) gives the summary a separate ``test`` command gives, in one process."""
    robustness = ["--data.ood_size", "64", "--robustness.adv_samples", "16", "--robustness.pgd_steps", "2"]
    _, _, separate = fit_and_test(SPARSE, cifar_dir, tmp_path / "separate", *robustness)
    main(["fit", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path / "one"), *robustness, "--then_test"])
    together = read_summary(tmp_path / "one" / "summary.json")
    assert is_complete(together) and together["test"]["global_step"] == together["fit"]["global_step"]
    assert len(together["test"]["metrics"]) == 7
    assert together["test"]["metrics"] == separate["test"]["metrics"]
    assert together["fit"]["metrics"] == separate["fit"]["metrics"]


def test_then_test_is_for_fit_only(cifar_dir, tmp_path):
    with pytest.raises(ValueError, match="--then_test goes with fit"):
        main(["test", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path), "--then_test"])


def test_fit_then_test_writes_one_complete_summary(cifar_dir, tmp_path):
    fit, _, summary = fit_and_test(SPARSE, cifar_dir, tmp_path, "--seed_everything", "3")
    assert is_complete(summary)
    assert summary["label"] == "quickstart_sparse" and summary["seed"] == 3
    method = summary["method"]["callbacks"][0]
    assert summary["method"]["name"] == "PruneAtInit" and method["settings"]["target_sparsity"] == 0.9
    assert method["settings"]["distribution"] == "erk" and summary["model"]["width"] == 4

    sparsity = summary["sparsity"]
    masks = next(cb for cb in fit.trainer.callbacks if type(cb).__name__ == "PruneAtInit").masks
    assert sparsity["global"] == pytest.approx(masks.sparsity()) and sparsity["global"] == pytest.approx(0.9, abs=1e-3)
    assert sparsity["remaining_weights"] == masks.remaining() and sparsity["prunable_weights"] == masks.total
    pruned = masks.total - masks.remaining()
    assert sparsity["remaining_parameters"] == sparsity["parameters"] - pruned
    assert set(sparsity["per_layer"]) == set(masks) and len(sparsity["per_layer"]) == 21

    size = summary["size"]
    assert size["sparse_mb"] * 1e6 == os.path.getsize(tmp_path / "model.sparse.pt")
    assert size["sparse_mb"] < size["dense_mb"]

    count = layer_flops(fit.model)
    densities = {name: 1 - layer["sparsity"] for name, layer in sparsity["per_layer"].items()}
    flops = summary["flops"]
    assert flops["dense_forward"] == count.total
    assert flops["sparse_forward"] == pytest.approx(sparse_forward_flops(count, densities))
    # ERK keeps the small early layers, which hold many FLOPs per weight, denser than the budget.
    assert flops["sparse_forward"] < flops["dense_forward"]
    # Static sparse training: 3 sparse forwards per sample, 96 samples in one epoch.
    assert summary["fit"]["training_samples"] == 96
    assert flops["training_total"] == pytest.approx(3 * flops["sparse_forward"] * 96)
    assert flops["training_dense_equivalent"] == pytest.approx(3 * count.total * 96)

    assert 0 <= summary["fit"]["metrics"]["val/acc"] <= 1 and "train/loss" in summary["fit"]["metrics"]
    assert 0 <= summary["test"]["metrics"]["test/acc"] <= 1
    assert summary["test"]["global_step"] == summary["fit"]["global_step"] == 6


def test_a_dense_run_and_a_multi_round_run(cifar_dir, tmp_path):
    _, _, dense = fit_and_test(str(REPO / "configs" / "quickstart_dense.yaml"), cifar_dir, tmp_path / "dense")
    assert dense["method"] == {"name": "dense", "callbacks": []} and dense["sparsity"]["global"] == 0.0
    assert dense["flops"]["training_total"] == dense["flops"]["training_dense_equivalent"]

    _, _, imp = fit_and_test(
        str(REPO / "configs" / "quickstart.yaml"), cifar_dir, tmp_path / "imp",
        "--trainer.callbacks.rounds", "2", "--trainer.callbacks.epochs_per_round", "1",
    )  # fmt: skip
    assert [row["round"] for row in imp["rounds"]] == [0, 1, 2]
    assert [row["sparsity"] for row in imp["rounds"]] == pytest.approx([0.0, 0.5, 0.75], abs=1e-3)
    assert imp["sparsity"]["global"] == pytest.approx(0.75, abs=1e-3)
    # Round 0 is dense, rounds 1 and 2 at 50% and 75%: training FLOPs fall between sparse and dense.
    assert imp["flops"]["training_total"] < imp["flops"]["training_dense_equivalent"]


def test_rigl_counts_its_dense_gradients(cifar_dir, tmp_path):
    _, _, rigl = fit_and_test(
        str(REPO / "configs" / "rigl.yaml"), cifar_dir, tmp_path, "--trainer.callbacks.update_every", "2"
    )
    flops = rigl["flops"]
    # 6 steps, T_end = floor(0.75 * 6) = 4; the epoch's middle step is 3 < 4, so the whole epoch is counted at
    # (3 f_S dT + 2 f_S + f_D) / (dT + 1) per sample.
    sparse, dense = flops["sparse_forward"], flops["dense_forward"]
    assert flops["training_total"] == pytest.approx(96 * (3 * sparse * 2 + 2 * sparse + dense) / 3)


def test_resume_carries_training_flops_and_fit_after_test_drops_the_stale_test(cifar_dir, tmp_path):
    main(["fit", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path, epochs=1)])
    first = read_summary(tmp_path / "summary.json")
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    main(["test", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path), "--ckpt_path", last])
    assert is_complete(read_summary(tmp_path / "summary.json"))
    main(["fit", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path, epochs=2), "--ckpt_path", "last"])
    resumed = read_summary(tmp_path / "summary.json")
    assert "test" not in resumed and not is_complete(resumed)
    assert resumed["fit"]["training_samples"] == 192 and resumed["fit"]["global_step"] == 12
    assert resumed["flops"]["training_total"] == pytest.approx(2 * first["flops"]["training_total"])


def test_bad_options_fail_at_config_time(cifar_dir, tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        RunSummary(filename="a/summary.json")
    with pytest.raises(ValueError, match="label must be"):
        RunSummary(label=" ")
    cli = main(["--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path), "--summary.label", "mine"], run=False)
    summary = next(cb for cb in cli.trainer.callbacks if isinstance(cb, RunSummary))
    assert summary.label == "mine"


def test_summary_json_is_valid_json_with_no_nan(cifar_dir, tmp_path):
    main(["fit", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path)])
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)


def test_a_fit_cut_short_by_max_time_is_not_complete(cifar_dir, tmp_path):
    main(["fit", "--config", SPARSE, *tiny_overrides(cifar_dir, tmp_path, epochs=1000), "--trainer.max_time",
          "00:00:00:02"])  # fmt: skip
    summary = read_summary(tmp_path / "summary.json")
    assert summary["fit"]["completed"] is False and summary["fit"]["epochs"] < 1000
