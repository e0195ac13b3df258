"""The benchmark suite in its CI-sized mode on a CPU: every section runs and reports sane numbers (not timed here)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch._dynamo
from lightning.pytorch import Callback, Trainer

import benchmarks.common
from benchmarks.cpu_precision import CI_SETTINGS as PRECISION_CI
from benchmarks.cpu_precision import VARIANTS as PRECISION_VARIANTS
from benchmarks.cpu_precision import main as cpu_precision
from benchmarks.modelpruning import CI_SETTINGS as MODELPRUNING_CI
from benchmarks.modelpruning import SIDES as MODELPRUNING_SIDES
from benchmarks.modelpruning import main as modelpruning_main
from benchmarks.pruning_time import PRUNING_COMPUTATIONS
from benchmarks.suite import (
    CI_SETTINGS,
    COMPILE_LIGHTNING_VARIANTS,
    COMPILE_LOOP_VARIANTS,
    LIGHTNING_VARIANTS,
    LOOP_VARIANTS,
    main,
    parse_args,
)
from benchmarks.throughput import HostSyncCounter, InMemoryCIFAR10, ResidentBatches, make_datamodule, new_model


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small shared runner, OpenMP threads spinning against each other cost more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_suite_runs_every_section_and_writes_json_and_markdown(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)
    torch._dynamo.reset()  # nothing compiled by earlier tests to reuse
    try:
        result = main(["--ci", "--device", "cpu", "--compile", "--compile-backend", "eager"])
    finally:
        torch._dynamo.reset()

    assert result["environment"]["device"] == "cpu" and result["environment"]["torch"] == torch.__version__
    assert result["settings"]["width"] == CI_SETTINGS["width"] and result["settings"]["precision"] == "32"
    assert set(result["wall_s"]) == {"loop", "pruning", "lightning", "host_syncs", "compile"}

    loop = result["loop"]["variants"]
    assert set(loop) == set(LOOP_VARIANTS)
    for stats in loop.values():
        assert stats["steps"] == CI_SETTINGS["steps"] * CI_SETTINGS["rounds"]
        assert stats["mean_step_s"] > 0 and stats["median_step_s"] > 0
        assert stats["epoch_s"] == pytest.approx(45_000 / CI_SETTINGS["batch_size"] * stats["mean_step_s"])
    assert result["loop"]["ratios_mean"]["masked_over_dense"] == pytest.approx(
        loop["masked"]["mean_step_s"] / loop["dense"]["mean_step_s"]
    )

    lightning = result["lightning"]["variants"]
    assert set(lightning) == set(LIGHTNING_VARIANTS)
    for stats in lightning.values():
        assert stats["epochs"] == CI_SETTINGS["epochs"] * CI_SETTINGS["lightning_rounds"]
        assert stats["train_images"] == CI_SETTINGS["train_images"]
        assert stats["mean_epoch_s"] > 0 and stats["warmup_epoch_s"] > 0
        assert stats["graphs_compiled_after_warmup"] == 0

    pruning = result["pruning"]["computations"]
    assert list(pruning) == list(PRUNING_COMPUTATIONS)
    for stats in pruning.values():
        assert stats["seconds"] > 0
        assert stats["sparsity"] == pytest.approx(0.9, abs=1e-4)

    assert "skipped" in result["host_syncs"]  # CUDA only

    compiled = result["compile"]
    assert set(compiled["loop"]) == set(COMPILE_LOOP_VARIANTS)
    assert set(compiled["lightning"]) == set(COMPILE_LIGHTNING_VARIANTS)
    assert compiled["graphs_compiled_after_mask_change"] == {"new_topology": 0, "higher_sparsity": 0}
    # Compiled once: the second model, the mask changes and the Lightning fits reuse the loop's graph.
    assert compiled["graphs_compiled_by_loop"] >= 1
    assert compiled["graphs_compiled_in_total"] == compiled["graphs_compiled_by_loop"]
    assert result["summary"]["recompiles_after_mask_change"] == 0

    saved = json.loads((tmp_path / "suite_ci_cpu.json").read_text())
    assert saved["summary"] == pytest.approx(result["summary"])
    markdown = (tmp_path / "suite_ci_cpu.md").read_text()
    assert "python benchmarks/suite.py --ci --device cpu --compile --compile-backend eager`" in markdown
    assert "## Plain PyTorch loop" in markdown and "## Pruning computations" in markdown


def test_ci_defaults_yield_to_explicit_options_and_cpu_defaults_are_plain():
    args = parse_args(["--ci", "--device", "cpu", "--width", "16", "--sections", "loop"])
    assert args.width == 16 and args.batch_size == CI_SETTINGS["batch_size"]
    assert args.precision == "32" and args.channels_last is False
    assert args.sections == ["loop"]
    full = parse_args(["--device", "cpu"])
    assert full.width == 64 and full.batch_size == 500 and full.steps == 50
    assert "compile" not in full.sections and "compile" in parse_args(["--device", "cpu", "--compile"]).sections
    with pytest.raises(SystemExit):
        parse_args(["--device", "cpu", "--train-images", "100", "--batch-size", "500"])


class CaptureBatches(Callback):
    def __init__(self, count: int) -> None:
        self.count = count
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if len(self.batches) < self.count:
            self.batches.append(tuple(tensor.clone() for tensor in batch))


def test_loop_batches_are_the_datamodule_batches_lightning_trains_on(tmp_path, one_thread):
    """The plain loop is fed exactly what CIFAR10DataModule feeds Trainer.fit: same order, crops, flips, scaling."""
    data = InMemoryCIFAR10(train_images=48, batch_size=16)
    capture = CaptureBatches(count=3)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        callbacks=[capture],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    settings = parse_args(["--ci", "--device", "cpu", "--width", "4"])
    trainer.fit(new_model(settings, compiled=False), datamodule=data)
    loop_batches = ResidentBatches(data.train_split, 16, torch.device("cpu"))
    for images, labels in capture.batches:
        loop_images, loop_labels = next(loop_batches)
        assert torch.equal(loop_images, images) and torch.equal(loop_labels, labels)


def test_real_data_dir_is_read_through_the_datamodule(cifar_dir):
    data = make_datamodule(str(cifar_dir), train_images=64, batch_size=32)
    data.setup("fit")
    assert data.source == "image_folder" and len(data.train_split) == 64


def test_host_sync_counter_counts_synchronizing_calls_per_source_line(monkeypatch):
    """The counter's bookkeeping, with the CUDA debug mode replaced by warnings raised at a known line."""
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    counter = HostSyncCounter(first_step=1, steps=2)

    class Step:
        global_step = 0

    trainer = Step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # outside the counted window
        for step in range(4):
            trainer.global_step = step
            counter.on_train_batch_start(trainer, None, None, step)
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
        counter.on_train_end(trainer, None)

    assert modes == ["warn", "default"]
    assert counter.steps_seen == 2
    ((source, count),) = counter.sources.items()
    assert source.startswith("tests/test_benchmarks.py:") and count == 2


def test_modelpruning_side_by_side_smoke_reports_sparsity_zeros_and_resume_facts(one_thread):
    """Both sides reach 90%; ours stays exact through training and a resume; the resume facts are counts."""
    result = modelpruning_main(["--ci", "--no-save"])

    assert result["command"] == "python benchmarks/modelpruning.py --ci --no-save"
    assert result["settings"]["width"] == MODELPRUNING_CI["width"] and result["environment"]["device"] == "cpu"
    assert set(result["sides"]) == set(MODELPRUNING_SIDES)
    epoch_steps, resume_epoch = MODELPRUNING_CI["epoch_steps"], MODELPRUNING_CI["resume_epoch"]
    epochs = MODELPRUNING_CI["steps"] // epoch_steps
    for side in result["sides"].values():
        assert side["sparsity"] == pytest.approx(0.9, abs=1e-4)
        assert side["pruned_weights"] == round(0.9 * side["prunable_weights"])  # one global top-k
        assert side["median_step_s"] > 0 and side["steps_timed"] > 0
        assert side["after_fit"]["nonzero_at_pruned_effective"] == [0] * MODELPRUNING_CI["rounds"]
        assert side["after_fit"]["last_checkpoint"]["nonzero_at_pruned"] == 0
        resume = side["resume"]
        assert resume["from_checkpoint"]["global_step"] == resume_epoch * epoch_steps
        assert resume["steps_after_resume"] == (epochs - resume_epoch) * epoch_steps
        assert isinstance(resume["masks_active_after_resume"], bool)
        assert isinstance(resume["from_checkpoint"]["masks_saved"], bool)
        assert isinstance(resume["nonzero_at_pruned_effective"], int)
        assert 0 <= resume["nonzero_at_pruned_effective"] <= side["pruned_weights"]

    ours = result["sides"]["ours"]
    assert ours["pruned_before_step"] == 0
    assert ours["after_fit"]["nonzero_at_pruned_momentum"] == 0
    assert ours["resume"]["from_checkpoint"]["masks_saved"] and ours["resume"]["masks_active_after_resume"]
    assert ours["resume"]["pruned_positions_kept"]
    assert ours["resume"]["nonzero_at_pruned_effective"] == 0
    assert ours["resume"]["last_checkpoint"]["nonzero_at_pruned"] == 0
    assert ours["resume"]["effective_sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert result["sides"]["theirs"]["pruned_before_step"] == epoch_steps
    assert 0 < result["mask_agreement"]["agreeing_positions"] <= 1
    assert result["theirs_over_ours_median"] > 0


def test_cpu_precision_ci_run_reports_every_variant_and_writes_json_and_markdown(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)
    result = cpu_precision(["--ci"])

    assert result["environment"]["device"] == "cpu" and result["environment"]["cpu_threads"] == 1
    assert {key: result["settings"][key] for key in PRECISION_CI} == PRECISION_CI
    assert result["steps_timed_per_variant"] == PRECISION_CI["rounds"] * PRECISION_CI["steps"]
    variants = set(PRECISION_VARIANTS)
    assert set(result["median_step_s"]) == set(result["mean_step_s"]) == set(result["final_loss"]) == variants
    assert all(seconds > 0 for seconds in [*result["median_step_s"].values(), *result["mean_step_s"].values()])
    assert set(result["speedup_over_fp32"]) == {"bf16_channels_last", "bf16_contiguous"}
    for name, speedup in result["speedup_over_fp32"].items():
        assert speedup == pytest.approx(result["median_step_s"]["fp32"] / result["median_step_s"][name])
    assert all(0 <= loss < 10 for loss in result["final_loss"].values())  # finite cross-entropies, not NaN
    assert isinstance(result["cpu_computes_bf16"], bool) and result["auto_precision"] in ("bf16-mixed", "32-true")

    saved = json.loads((tmp_path / "cpu_precision_ci.json").read_text())
    assert saved["median_step_s"] == pytest.approx(result["median_step_s"])
    markdown = (tmp_path / "cpu_precision_ci.md").read_text()
    assert "Command: `python benchmarks/cpu_precision.py --ci`" in markdown
    assert "| bf16 autocast + channels_last |" in markdown and "| bf16 autocast, contiguous |" in markdown
