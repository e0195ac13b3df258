"""OOD test sets (datamodules.ood, CIFAR10DataModule(ood=...)) and the test metrics of ResNet18Classifier."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch import Trainer, seed_everything
from PIL import Image
from torch.utils.data import DataLoader

from datamodules import CIFAR10DataModule
from datamodules.cifar10 import ResidentBatchLoader, normalize
from datamodules.ood import OOD_LABEL, noise_images, read_image_tree
from lit_modules import ResNet18Classifier, RobustnessMetrics
from tests.helpers import quiet_trainer

TEST_METRICS = (
    "test/acc",
    "test/loss",
    "test/ece",
    "test/nll",
    "test/ood_auroc",
    "test/adv_fgsm_acc",
    "test/adv_pgd_acc",
)


def cpu_trainer(tmp_path: Path, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, **kwargs)


def make_dm(root: Path, **kwargs) -> CIFAR10DataModule:
    options = dict(val_size=40, batch_size=32, eval_batch_size=64, seed=3, num_workers=0, download=False)
    return CIFAR10DataModule(data_dir=str(root), **{**options, **kwargs})


def set_up(dm: CIFAR10DataModule, tmp_path: Path) -> CIFAR10DataModule:
    dm.trainer = cpu_trainer(tmp_path)
    dm.prepare_data()
    dm.setup("test")
    return dm


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------ noise sets


def test_noise_sets_are_uint8_reproducible_from_the_seed():
    gaussian = noise_images("gaussian", 256, seed=7)
    assert gaussian.shape == (256, 3, 32, 32) and gaussian.dtype == torch.uint8
    assert torch.equal(gaussian, noise_images("gaussian", 256, seed=7))
    assert not torch.equal(gaussian, noise_images("gaussian", 256, seed=8))
    # N(0.5, 0.25) in [0, 1] scaled to 255: mean about 127.5, std a little under 0.25 * 255 (clamped tails).
    pixels = gaussian.float()
    assert abs(pixels.mean().item() - 127.5) < 1.0 and 55 < pixels.std().item() < 64
    uniform = noise_images("uniform", 256, seed=7)
    assert torch.equal(uniform, noise_images("uniform", 256, seed=7))
    assert uniform.min().item() == 0 and uniform.max().item() == 255
    assert abs(uniform.float().mean().item() - 127.5) < 1.0


@pytest.mark.parametrize("gpu_resident", [False, True])
def test_datamodule_serves_cifar_test_then_ood_and_normalises_both(cifar_dir: Path, tmp_path: Path, gpu_resident):
    dm = set_up(make_dm(cifar_dir, ood="gaussian", ood_size=100, gpu_resident=gpu_resident), tmp_path)
    assert torch.equal(dm.ood_split.images, noise_images("gaussian", 100, seed=3))  # the datamodule's seed
    assert bool((dm.ood_split.labels == OOD_LABEL).all())
    loaders = dm.test_dataloader()
    loader_type = ResidentBatchLoader if gpu_resident else DataLoader
    assert isinstance(loaders, list) and len(loaders) == 2
    assert all(isinstance(loader, loader_type) for loader in loaders)
    test_batches, ood_batches = list(loaders[0]), list(loaders[1])
    assert torch.equal(torch.cat([batch[0] for batch in test_batches]), dm.test_split.images)
    assert torch.equal(torch.cat([images for images, _ in ood_batches]), dm.ood_split.images)
    # OOD batches go through the same transfer hook as test batches: normalised, never augmented.
    images, _ = dm.on_after_batch_transfer(ood_batches[0], dataloader_idx=1)
    assert images.dtype == torch.float32 and torch.equal(images, normalize(ood_batches[0][0]))
    # Validation and predict loaders stay single loaders of the CIFAR-10 splits.
    assert isinstance(dm.val_dataloader(), loader_type)
    assert isinstance(dm.predict_dataloader(), loader_type)


def test_same_seed_same_ood_set_and_no_ood_means_one_test_loader(cifar_dir: Path, tmp_path: Path):
    first = set_up(make_dm(cifar_dir, ood="uniform", ood_size=50, seed=11), tmp_path)
    second = set_up(make_dm(cifar_dir, ood="uniform", ood_size=50, seed=11), tmp_path)
    assert torch.equal(first.ood_split.images, second.ood_split.images)
    # fit neither loads nor holds the OOD set; asking for test batches builds it.
    fitting = make_dm(cifar_dir, ood="uniform", ood_size=50, seed=11)
    fitting.trainer = cpu_trainer(tmp_path)
    fitting.setup("fit")
    assert fitting.ood_split is None
    assert len(fitting.test_dataloader()) == 2 and torch.equal(fitting.ood_split.images, first.ood_split.images)
    for off in (None, "none", "null"):
        dm = set_up(make_dm(cifar_dir, ood=off), tmp_path)
        assert dm.ood is None and dm.ood_split is None and isinstance(dm.test_dataloader(), DataLoader)


# ------------------------------------------------------------------------------------------------ image folder


def test_image_folder_ood_reads_any_layout_and_resizes(cifar_dir: Path, tmp_path: Path):
    folder = tmp_path / "ood_images"
    (folder / "a" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "x.png")
    Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(folder / "a" / "big.JPG", quality=95)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "a" / "deeper" / "grey.jpeg")
    (folder / "notes.txt").write_text("not an image")
    exact = np.array(Image.open(folder / "x.png"))

    images = read_image_tree(folder)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    # Sorted by path: a/big.JPG, a/deeper/grey.jpeg, x.png; a 32x32 image is taken as is.
    assert torch.equal(images[2], torch.from_numpy(exact).permute(2, 0, 1))
    assert torch.equal(images[1][0], images[1][1])  # grey -> RGB with equal channels

    dm = set_up(make_dm(cifar_dir, ood=str(folder)), tmp_path)
    assert torch.equal(dm.ood_split.images, images)
    assert len(dm.test_dataloader()) == 2


def test_empty_image_folder_is_a_clear_error(cifar_dir: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    dm = make_dm(cifar_dir, ood=str(empty))
    with pytest.raises(FileNotFoundError, match=r"no \.png/\.jpg/\.jpeg") as excinfo:
        set_up(dm, tmp_path)
    one_line_error(excinfo)


# ------------------------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("bad", ["gausian", "SVHN2", "/no/such/folder", 3])
def test_bad_ood_value_is_a_one_line_config_error(cifar_dir: Path, bad):
    with pytest.raises(ValueError, match="`ood` must be one of none, gaussian, uniform, cifar100, svhn") as excinfo:
        make_dm(cifar_dir, ood=bad)
    assert repr(str(bad) if not isinstance(bad, int) else bad) in one_line_error(excinfo)


def test_bad_ood_size_is_a_one_line_config_error(cifar_dir: Path):
    with pytest.raises(ValueError, match="ood_size") as excinfo:
        make_dm(cifar_dir, ood="gaussian", ood_size=0)
    one_line_error(excinfo)


# ------------------------------------------------------------------------------------------------ torchvision sets


@pytest.mark.parametrize("name, dataset_class", [("svhn", "SVHN"), ("cifar100", "CIFAR100")])
@pytest.mark.parametrize("download", [True, False])
def test_offline_download_is_one_clear_line(cifar_dir: Path, monkeypatch, name, dataset_class, download):
    def offline(root, *args, download=False, **kwargs):
        if download:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution\n(more detail)")
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, dataset_class, offline)
    dm = make_dm(cifar_dir, ood=name, download=download)  # CIFAR-10 is there; only the OOD set is missing
    with pytest.raises(FileNotFoundError) as excinfo:
        dm.prepare_data()
    message = one_line_error(excinfo)
    assert f"OOD set '{name}' is not available" in message
    assert "gaussian" in message and "uniform" in message and "folder" in message
    assert ("download failed" in message and "URLError" in message) if download else "download is false" in message


@pytest.mark.parametrize("name, dataset_class", [("svhn", "SVHN"), ("cifar100", "CIFAR100")])
def test_torchvision_sets_load_as_nchw_uint8(cifar_dir: Path, tmp_path: Path, monkeypatch, name, dataset_class):
    rng = np.random.default_rng(0)
    # torchvision keeps CIFAR-100 as (N, 32, 32, 3) and SVHN as (N, 3, 32, 32).
    nhwc = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    stored = nhwc if name == "cifar100" else nhwc.transpose(0, 3, 1, 2).copy()

    class LocalCopy:
        def __init__(self, root, *args, download=False, **kwargs):
            self.data = stored

    monkeypatch.setattr(torchvision.datasets, dataset_class, LocalCopy)
    dm = set_up(make_dm(cifar_dir, ood=name), tmp_path)
    assert torch.equal(dm.ood_split.images, torch.from_numpy(nhwc).permute(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------------ test metrics


def test_with_the_robustness_callback_test_logs_all_seven_metrics_without_dataloader_suffix(cifar_dir, tmp_path):
    seed_everything(0)
    dm = make_dm(cifar_dir, eval_batch_size=32, ood="gaussian", ood_size=64)
    model = ResNet18Classifier(width=4)
    robustness = RobustnessMetrics(adv_samples=48, pgd_steps=3)
    trainer = cpu_trainer(tmp_path, callbacks=[robustness])
    (clean, ood) = trainer.test(model, datamodule=dm, verbose=False)

    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("test/")}
    assert set(metrics) == set(TEST_METRICS)
    # Metrics logged at the test epoch's end (ECE, the OOD AUROC and the attacks, which every DDP rank must log) are
    # reported with every dataloader's results; the OOD loader contributes nothing of its own besides the AUROC.
    epoch_end = {"test/ece", "test/ood_auroc", "test/adv_fgsm_acc", "test/adv_pgd_acc"}
    assert set(clean) == set(TEST_METRICS) and set(ood) <= epoch_end and "test/ood_auroc" in ood
    assert all(ood[name] == clean[name] for name in set(ood) & set(clean))
    for name in ("test/acc", "test/ece", "test/ood_auroc", "test/adv_fgsm_acc", "test/adv_pgd_acc"):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    assert metrics["test/nll"] > 0 and metrics["test/nll"] == pytest.approx(metrics["test/loss"])
    # The attacks used exactly the 48 images of the evaluation subset, and left no gradient on the parameters.
    assert robustness.attacked == 48
    assert all(param.grad is None for param in model.parameters())


def test_under_bf16_mixed_the_callback_measures_in_the_test_steps_precision(cifar_dir: Path, tmp_path: Path):
    """The callback runs in test_step's autocast: its NLL is the loss to the last bit, not a bf16 recomputation."""
    seed_everything(0)
    dm = make_dm(cifar_dir, eval_batch_size=32, ood="gaussian", ood_size=64)
    trainer = cpu_trainer(tmp_path, precision="bf16-mixed", callbacks=[RobustnessMetrics(adv_samples=16, pgd_steps=1)])
    trainer.test(ResNet18Classifier(width=4), datamodule=dm, verbose=False)
    metrics = trainer.callback_metrics
    assert float(metrics["test/nll"]) == float(metrics["test/loss"])
    assert {"test/ece", "test/ood_auroc", "test/adv_fgsm_acc", "test/adv_pgd_acc"} <= set(metrics)


def test_the_callback_names_what_it_needs_from_the_module():
    from lightning.pytorch import LightningModule

    with pytest.raises(ValueError, match="needs a module with num_classes in its hparams"):
        RobustnessMetrics().setup(None, LightningModule(), "test")
    with pytest.raises(ValueError, match="needs test_step to return the batch's logits, got NoneType"):
        RobustnessMetrics().on_test_batch_end(None, LightningModule(), None, (None, None), 0)


def test_the_classifier_alone_logs_accuracy_and_loss(cifar_dir: Path, tmp_path: Path):
    dm = make_dm(cifar_dir, eval_batch_size=50, ood="gaussian", ood_size=64)
    trainer = cpu_trainer(tmp_path)
    trainer.test(ResNet18Classifier(width=4), datamodule=dm, verbose=False)
    assert {name for name in trainer.callback_metrics if name.startswith("test/")} == {"test/acc", "test/loss"}


def test_the_old_model_options_still_attack_with_a_deprecation_warning(cifar_dir: Path, tmp_path: Path):
    """``ResNet18Classifier(adv_samples=...)`` (``model.adv_samples`` in an old config) gives the same metrics."""
    dm = make_dm(cifar_dir, eval_batch_size=32, ood="gaussian", ood_size=64)
    seed_everything(0)
    with pytest.warns(DeprecationWarning, match=r"adv_samples, pgd_steps moved to the RobustnessMetrics callback"):
        old = ResNet18Classifier(width=4, adv_samples=48, pgd_steps=3)
    (callback,) = old.configure_callbacks()
    assert (callback.adv_samples, callback.pgd_steps, callback.adv_eps) == (48, 3, pytest.approx(8 / 255))
    trainer = cpu_trainer(tmp_path)
    trainer.test(old, datamodule=dm, verbose=False)
    before = {name: float(value) for name, value in trainer.callback_metrics.items()}
    seed_everything(0)
    new = ResNet18Classifier(width=4)
    trainer = cpu_trainer(tmp_path, callbacks=[RobustnessMetrics(adv_samples=48, pgd_steps=3)])
    trainer.test(new, datamodule=dm, verbose=False)
    assert set(before) == set(TEST_METRICS)
    assert before == {name: float(value) for name, value in trainer.callback_metrics.items()}


def test_attacks_off_and_no_ood_metric_without_ood_set(cifar_dir: Path, tmp_path: Path):
    dm = make_dm(cifar_dir, val_size=0, eval_batch_size=50, ood=None)
    trainer = cpu_trainer(tmp_path, callbacks=[RobustnessMetrics(adv_samples=0)])
    trainer.test(ResNet18Classifier(width=4), datamodule=dm, verbose=False)
    assert {name for name in trainer.callback_metrics if name.startswith("test/")} == {
        "test/acc",
        "test/loss",
        "test/ece",
        "test/nll",
    }


@pytest.mark.parametrize(
    "option, value",
    [("adv_samples", -1), ("adv_samples", 1.5), ("adv_eps", -0.1), ("pgd_steps", 0), ("pgd_step_size", 0.0)],
)
def test_bad_attack_options_are_one_line_errors(option, value):
    with pytest.raises(ValueError, match=option) as excinfo:
        RobustnessMetrics(**{option: value})
    one_line_error(excinfo)
    with pytest.raises(ValueError, match=option), pytest.warns(DeprecationWarning):
        ResNet18Classifier(width=4, **{option: value})  # the old options are checked as early


def test_checkpoint_without_the_new_options_still_loads(tmp_path: Path):
    model = ResNet18Classifier(width=4)
    path = tmp_path / "old.ckpt"
    hparams = {key: value for key, value in model.hparams.items() if not key.startswith(("adv_", "pgd_"))}
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.4.0"}, path
    )
    loaded = ResNet18Classifier.load_from_checkpoint(path, weights_only=False)
    assert loaded.hparams.adv_samples is None and loaded.hparams.pgd_steps is None
    assert loaded.configure_callbacks() == []


def test_checkpoint_with_the_old_attack_options_loads_and_keeps_them(tmp_path: Path):
    """A checkpoint saved before RobustnessMetrics holds the attack options in its hparams: they still apply."""
    model = ResNet18Classifier(width=4)
    path = tmp_path / "old.ckpt"
    hparams = {**model.hparams, "adv_samples": 1000, "adv_eps": 8 / 255, "pgd_steps": 10, "pgd_step_size": 2 / 255}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.0"},
               path)  # fmt: skip
    with pytest.warns(DeprecationWarning, match="RobustnessMetrics"):
        loaded = ResNet18Classifier.load_from_checkpoint(path, weights_only=False)
    (callback,) = loaded.configure_callbacks()
    assert (callback.adv_samples, callback.pgd_steps) == (1000, 10)
