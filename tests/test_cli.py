"""The command line: every config instantiates, fit writes logs and last.ckpt, test reports test/acc."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from cli import main
from datamodules import CIFAR10DataModule
from lit_modules import ResNet18, ResNet18Classifier
from pruning_callbacks import MaskedTraining
from pruning_callbacks.engine.checks import ToolkitDeprecationWarning
from tests.helpers import REPO, tiny_overrides

PIECE_FOLDERS = ("model", "data", "trainer")
"""configs/ folders of one-section files, which method configs name (``model: model/resnet18.yaml``)."""
PIECES = sorted(path for folder in PIECE_FOLDERS for path in (REPO / "configs" / folder).glob("*.yaml"))
CONFIGS = sorted(
    path
    for path in (REPO / "configs").rglob("*.yaml")
    if path.relative_to(REPO / "configs").parts[0] not in PIECE_FOLDERS
)
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


def test_every_piece_is_named_by_a_config_or_the_readme():
    texts = [path.read_text() for path in CONFIGS] + [(REPO / "README.md").read_text()]
    for piece in PIECES:
        name = f"{piece.parent.name}/{piece.name}"
        assert any(name in text for text in texts), f"configs/{name} is used nowhere"
    assert {"model/resnet18.yaml", "data/cifar10.yaml", "trainer/cpu.yaml", "trainer/ddp.yaml"} <= {
        f"{piece.parent.name}/{piece.name}" for piece in PIECES
    }


@pytest.mark.parametrize("piece", PIECES, ids=config_id)
def test_every_piece_composes_after_a_method_config(piece, capsys):
    """``--<section> configs/<section>/<file>`` after a method's config sets that section's options, and keeps the rest.

    Read from ``--print_config`` (the resolved config, as a run saves it): the DDP piece asks for GPUs, which a
    CPU machine cannot instantiate.
    """
    section = piece.parent.name
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs" / "rigl.yaml"), f"--{section}", str(piece), "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    for key, value in yaml.safe_load(piece.read_text()).items():
        assert resolved[section][key] == value, key
    assert [callback["class_path"] for callback in resolved["trainer"]["callbacks"]] == ["pruning_callbacks.RigL"]
    assert resolved["trainer"]["max_epochs"] == 200 and resolved["model"]["lr"] == 0.1


def test_a_method_config_reads_its_pieces_relative_to_itself(cifar_dir, tmp_path):
    """configs/study/*.yaml name ../model/*.yaml: the path is the config file's, not the working directory's."""
    study = main(["--config", str(REPO / "configs" / "study" / "rigl.yaml"), "--data.data_dir", str(cifar_dir)],
                 run=False)  # fmt: skip
    assert (study.model.hparams.width, study.model.hparams.cosine_epochs) == (16, 10)
    assert study.datamodule.hparams.train_subset == 10_000


def test_a_run_from_pieces_resumes_from_the_same_values_written_out(cifar_dir, tmp_path):
    """The saved config.yaml is resolved: the pieces' values written into one file are the same experiment."""
    composed = REPO / "configs" / "rigl.yaml"
    flat = yaml.safe_load(composed.read_text())
    for section in ("model", "data"):
        flat[section] = yaml.safe_load((REPO / "configs" / flat[section]).read_text())
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    every_step = ["--trainer.callbacks.update_every", "1"]
    main(["fit", "--config", str(composed), *tiny_overrides(cifar_dir, tmp_path / "run"), *every_step])
    resumed = main(["fit", "--config", str(tmp_path / "flat.yaml"), *tiny_overrides(cifar_dir, tmp_path / "run", 2),
                    *every_step, "--ckpt_path", "last"])  # fmt: skip
    assert resumed.trainer.current_epoch == 2


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_every_config_parses_and_instantiates(config, cifar_dir, tmp_path):
    overrides = [
        *tiny_overrides(cifar_dir, tmp_path),
        *dense_checkpoint_overrides(config, tmp_path),
        *masks_from_overrides(config, tmp_path),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["--config", str(config), *overrides], run=False)
    # The repository uses no deprecated name of its own (a callback passing an old name to its base would show here).
    assert not [str(w.message) for w in caught if issubclass(w.category, ToolkitDeprecationWarning)]
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
