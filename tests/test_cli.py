"""The command line: every config instantiates, fit writes logs and last.ckpt, test reports test/acc."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from cli import main
from datamodules import CIFAR10DataModule
from lit_modules import ResNet18, ResNet18Classifier
from pruning_callbacks import MaskedTraining
from tests.helpers import REPO, tiny_overrides

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
# The CPU study's (configs/study/) and the GPU protocol's (configs/repro/) configs run the same callbacks as the
# top-level ones on another protocol: every one is instantiated below, and a 2-step fit of each would repeat the
# top-level configs' fits. The repro/ fits still run behind -m slow.
FIT_CONFIGS = [
    path if path.parent.name != "repro" else pytest.param(path, marks=pytest.mark.slow)
    for path in CONFIGS
    if "study" not in path.relative_to(REPO / "configs").parts
]


def config_id(path: Path) -> str:
    return str(path.relative_to(REPO / "configs").with_suffix(""))


def dense_checkpoint_overrides(config: Path, tmp_path: Path) -> list[str]:
    """Configs that start from a trained dense model get a tiny one (their YAML names the GPU run's file)."""
    if "dense_checkpoint:" not in config.read_text():
        return []
    path = tmp_path / "dense_weights.pt"
    torch.save(ResNet18Classifier(width=4).state_dict(), path)
    return ["--trainer.callbacks.dense_checkpoint", str(path)]


def masks_from_overrides(config: Path, tmp_path: Path) -> list[str]:
    """Configs whose rounds reuse another run's masks get an existing folder (a 2-step run never reads it)."""
    if "masks_from:" not in config.read_text():
        return []
    (tmp_path / "ticket_run").mkdir(exist_ok=True)
    return ["--trainer.callbacks.masks_from", str(tmp_path / "ticket_run")]


def synflow_overrides(config: Path) -> list[str]:
    """SynFlow's 100 pruning iterations cost more than the rest of a 2-step run; 2 exercise the same code."""
    return ["--trainer.callbacks.iterations", "2"] if "score: synflow" in config.read_text() else []


def schedule_overrides(config: Path) -> list[str]:
    """A scheduled method's updates are 100 steps apart; a 2-step run needs them 1 step apart."""
    return ["--trainer.callbacks.update_every", "1"] if "ScheduledPruning" in config.read_text() else []


def test_there_are_configs():
    expected = {
        "dense.yaml", "quickstart.yaml", "quickstart_dense.yaml", "quickstart_sparse.yaml", "lottery_ticket.yaml",
        "lottery_ticket_late_rewind.yaml", "han_magnitude.yaml", "oneshot_magnitude.yaml", "iterative_magnitude.yaml",
        "synflow.yaml", "snip.yaml", "grasp.yaml", "random_erk.yaml", "rigl.yaml", "set.yaml", "static_sparse.yaml",
        "lottery_ticket_reinit.yaml", "oneshot_random.yaml", "iterative_random.yaml", "early_bird.yaml",
    }  # fmt: skip
    repro = {"dense", "lth_rewind_init", "lth_late_rewind", "han", "oneshot", "iterative", "synflow", "snip", "grasp",
             "random_erk", "rigl", "set", "lth_reinit"}  # fmt: skip
    study = {"dense", "lth_late_rewind", "lth_rewind_init", "lth_reinit", "oneshot", "iterative", "synflow", "snip",
             "grasp", "random_erk", "random_uniform", "rigl", "set", "static", "han", "early_bird"}  # fmt: skip
    ids = {config_id(path) for path in CONFIGS}
    assert {name.removesuffix(".yaml") for name in expected} | {f"repro/{name}" for name in repro} <= ids
    assert {f"study/{name}" for name in study} <= ids and {"l1_filter", "gmp"} <= ids


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_every_config_parses_and_instantiates(config, cifar_dir, tmp_path):
    overrides = [
        *tiny_overrides(cifar_dir, tmp_path),
        *dense_checkpoint_overrides(config, tmp_path),
        *masks_from_overrides(config, tmp_path),
    ]
    cli = main(["--config", str(config), *overrides], run=False)
    assert isinstance(cli.model, ResNet18Classifier) and cli.model.hparams.width == 4
    assert isinstance(cli.datamodule, CIFAR10DataModule)
    checkpoints = [cb for cb in cli.trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    assert len(checkpoints) == 1 and checkpoints[0].save_last
    assert Path(cli.trainer.default_root_dir) == tmp_path


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=config_id)
def test_every_config_runs_fast_dev_run(config, cifar_dir, tmp_path):
    overrides = [
        *tiny_overrides(cifar_dir, tmp_path),
        *dense_checkpoint_overrides(config, tmp_path),
        *masks_from_overrides(config, tmp_path),
    ]
    overrides += [*synflow_overrides(config), *schedule_overrides(config)]
    cli = main(["fit", "--config", str(config), *overrides, "--trainer.fast_dev_run", "2"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 2


def test_the_dense_config_is_the_seed_recipe(cifar_dir, tmp_path):
    cli = main(["--config", str(REPO / "configs" / "dense.yaml"), "--data.data_dir", str(cifar_dir)], run=False)
    hp = cli.model.hparams
    assert (hp.width, hp.optimizer, hp.lr, hp.momentum, hp.weight_decay) == (64, "sgd", 0.1, 0.9, 5e-4)
    assert (hp.lr_scheduler, list(hp.milestones), hp.gamma) == ("multistep", [60, 120, 160], 0.2)
    assert cli.trainer.max_epochs == 200 and cli.datamodule.hparams.batch_size == 128
    assert sum(p.numel() for p in cli.model.parameters()) == 11_173_962


def test_fit_writes_events_and_last_ckpt_then_test_and_resume_work(cifar_dir, tmp_path):
    config = str(REPO / "configs" / "quickstart_sparse.yaml")
    fit = main(["fit", "--config", config, *tiny_overrides(cifar_dir, tmp_path)])
    assert not any(isinstance(cb, RichProgressBar) for cb in fit.trainer.callbacks)  # disabled by the overrides
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.exists() and list(tmp_path.glob("events.out.tfevents.*")) and (tmp_path / "config.yaml").exists()
    assert "val/acc" in fit.trainer.callback_metrics and "sparsity/global" in fit.trainer.callback_metrics
    checkpoint = torch.load(last, weights_only=True)
    ResNet18(width=4).load_state_dict(checkpoint["state_dict"], strict=True)

    tested = main(["test", "--config", config, *tiny_overrides(cifar_dir, tmp_path), "--ckpt_path", str(last)])
    assert 0.0 <= float(tested.trainer.callback_metrics["test/acc"]) <= 1.0

    resumed = main(["fit", "--config", config, *tiny_overrides(cifar_dir, tmp_path, epochs=2), "--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 2 * fit.trainer.global_step
    callback = next(cb for cb in resumed.trainer.callbacks if isinstance(cb, MaskedTraining))
    assert callback.mask_updates == 1  # restored from the checkpoint, not computed again


def test_default_run_has_a_rich_progress_bar(cifar_dir, tmp_path):
    overrides = [*tiny_overrides(cifar_dir, tmp_path), "--trainer.enable_progress_bar", "true"]
    cli = main(["--config", str(REPO / "configs" / "quickstart.yaml"), *overrides], run=False)
    assert any(isinstance(cb, RichProgressBar) for cb in cli.trainer.callbacks)


def test_bad_callback_value_in_config_is_a_config_time_error(cifar_dir, tmp_path):
    config = str(REPO / "configs" / "quickstart_sparse.yaml")
    with pytest.raises(ValueError, match=r"target_sparsity must be in \[0, 1\), got 1.5"):
        main(["--config", config, *tiny_overrides(cifar_dir, tmp_path), "--trainer.callbacks.target_sparsity", "1.5"],
             run=False)  # fmt: skip
