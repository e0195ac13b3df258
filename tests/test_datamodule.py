"""CIFAR10DataModule on tiny synthetic data: sources, splits, seeded batches, augmentation, errors."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from datamodules import CIFAR10DataModule
from datamodules.cifar10 import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASSES,
    EpochSeededSampler,
    ResidentBatchLoader,
    _leave_stop_signals_to_the_main_process,
    augment_batch,
    augmentation_plan,
    normalize,
)
from tests.helpers import REPO, quiet_trainer
from tests.synthetic import nearest_class, synthetic_cifar10, write_batches_py, write_image_folder

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 10
N_TRAIN, N_TEST = 10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("png"), TRAIN_PER_CLASS, TEST_PER_CLASS, fmt="png")


@pytest.fixture(scope="module")
def batches_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_batches_py(tmp_path_factory.mktemp("batches"), TRAIN_PER_CLASS, TEST_PER_CLASS)


def cpu_trainer(**kwargs) -> Trainer:
    return quiet_trainer(**kwargs)


def make_dm(root: Path, stage: str = "fit", **kwargs) -> CIFAR10DataModule:
    """A datamodule on ``root`` attached to a bare CPU trainer and set up."""
    options = dict(val_size=40, batch_size=32, eval_batch_size=64, seed=3, num_workers=0, download=False)
    dm = CIFAR10DataModule(data_dir=str(root), **{**options, **kwargs})
    dm.trainer = cpu_trainer()
    dm.prepare_data()
    dm.setup(stage)
    return dm


def train_epoch(dm: CIFAR10DataModule, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """Iterate one training epoch the way Lightning does: set_epoch, then transfer hook on every batch.

    Returns ``(uint8 images, labels, positions, float images)`` per batch.
    """
    trainer = dm.trainer
    loader = dm.train_dataloader()
    _set_sampler_epoch(loader, epoch)  # Lightning's own helper: proves set_epoch reaches our sampler
    trainer.fit_loop.epoch_progress.current.completed = epoch  # -> trainer.current_epoch
    trainer.training = True
    batches = []
    for images, labels, positions in loader:
        x, y = dm.on_after_batch_transfer((images, labels, positions), 0)
        assert torch.equal(y, labels)
        batches.append((images, labels, positions, x))
    trainer.training = False
    return batches


def assert_same_batches(first: list, second: list) -> None:
    assert len(first) == len(second)
    for batch_a, batch_b in zip(first, second, strict=True):
        for a, b in zip(batch_a, batch_b, strict=True):
            assert a.dtype == b.dtype
            assert torch.equal(a, b)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------- sources


def test_both_layouts_load_the_same_images(png_dir: Path, batches_dir: Path) -> None:
    folder, batches = make_dm(png_dir), make_dm(batches_dir)
    assert (folder.source, batches.source) == ("image_folder", "batches_py")
    expected = synthetic_cifar10(TRAIN_PER_CLASS, TEST_PER_CLASS)
    expected_train = torch.from_numpy(expected.train_images).permute(0, 3, 1, 2)
    expected_test = torch.from_numpy(expected.test_images).permute(0, 3, 1, 2)
    for dm in (folder, batches):
        assert dm.classes == CLASSES
        assert dm.train_split.images.shape == (N_TRAIN - 40, 3, 32, 32)
        assert dm.val_split.images.shape == (40, 3, 32, 32)
        assert dm.test_split.images.shape == (N_TEST, 3, 32, 32)
        assert dm.train_split.images.dtype == torch.uint8 and dm.train_split.labels.dtype == torch.int64
        assert torch.bincount(dm.test_split.labels).tolist() == [TEST_PER_CLASS] * 10
        # PNG is lossless and both writers draw the same images in the same order: exact equality.
        assert torch.equal(dm.test_split.images, expected_test)
        assert torch.equal(dm.test_split.labels, torch.from_numpy(expected.test_labels))
        assert torch.equal(dm.train_split.images, expected_train[dm.train_indices])
        assert torch.equal(dm.val_split.images, expected_train[dm.val_indices])
        # Labels belong to their images (each class has its own colour).
        predicted = torch.from_numpy(nearest_class(dm.train_split.images.numpy()))
        assert torch.equal(predicted, dm.train_split.labels)
    assert torch.equal(folder.train_split.images, batches.train_split.images)
    assert torch.equal(folder.train_split.labels, batches.train_split.labels)


def test_jpeg_image_folder_loads(tmp_path: Path) -> None:
    dm = make_dm(write_image_folder(tmp_path, 4, 2, fmt="jpg"), val_size=8)
    files = sorted((tmp_path / "test").glob("*/*.jpg"))  # class-major, like the loader
    decoded_by_pil = torch.stack([torch.from_numpy(np.array(Image.open(file))) for file in files]).permute(0, 3, 1, 2)
    assert dm.test_split.images.shape == (20, 3, 32, 32)
    # Decoders may round the inverse DCT differently by a level or two; the loader must not do anything else.
    assert (dm.test_split.images.int() - decoded_by_pil.int()).abs().max() <= 3
    expected = torch.from_numpy(synthetic_cifar10(4, 2).test_images).permute(0, 3, 1, 2)
    means = dm.test_split.images.float().mean(dim=(2, 3))
    assert (means - expected.float().mean(dim=(2, 3))).abs().max() < 3  # lossy, but colours survive
    assert torch.equal(torch.from_numpy(nearest_class(dm.test_split.images.numpy())), dm.test_split.labels)


def test_class_index_is_sorted_folder_position() -> None:
    assert tuple(sorted(CLASSES)) == CLASSES


def test_image_folder_wins_over_batches(tmp_path: Path) -> None:
    write_batches_py(tmp_path, 2, 1)
    write_image_folder(tmp_path, 3, 1)
    dm = make_dm(tmp_path, val_size=0)
    assert dm.source == "image_folder" and len(dm.train_split) == 30


# ----------------------------------------------------------------------------------------------------- splits


def test_split_is_disjoint_complete_and_reproducible(png_dir: Path) -> None:
    dm = make_dm(png_dir, val_size=50, split_seed=1)
    train, val = dm.train_indices, dm.val_indices
    assert len(train) == N_TRAIN - 50 and len(val) == 50
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(N_TRAIN))
    again = make_dm(png_dir, val_size=50, split_seed=1, seed=99)  # the training seed does not move the split
    assert torch.equal(again.train_indices, train) and torch.equal(again.val_indices, val)
    other = make_dm(png_dir, val_size=50, split_seed=2)
    assert not torch.equal(other.val_indices, val)


def test_train_subset_keeps_the_first_training_images(png_dir: Path) -> None:
    full = make_dm(png_dir)
    subset = make_dm(png_dir, train_subset=25)
    assert len(subset.train_split) == 25
    assert torch.equal(subset.train_indices, full.train_indices[:25])
    assert torch.equal(subset.val_indices, full.val_indices)
    assert len(subset.train_dataloader()) == 1  # 25 < batch 32: the incomplete batch is kept


def test_train_subset_larger_than_available(png_dir: Path) -> None:
    with pytest.raises(ValueError, match="train_subset") as excinfo:
        make_dm(png_dir, train_subset=N_TRAIN - 40 + 1)
    assert str(N_TRAIN - 40) in one_line_error(excinfo)


def test_val_size_too_large(png_dir: Path) -> None:
    with pytest.raises(ValueError, match="val_size") as excinfo:
        make_dm(png_dir, val_size=N_TRAIN)
    one_line_error(excinfo)


@pytest.mark.parametrize("gpu_resident", [False, True])
def test_val_size_zero_means_no_validation_loader(png_dir: Path, gpu_resident: bool) -> None:
    dm = make_dm(png_dir, val_size=0, gpu_resident=gpu_resident)
    assert dm.val_dataloader() == []
    assert len(dm.train_split) == N_TRAIN


@pytest.mark.parametrize("gpu_resident", [False, True])
def test_eval_loaders(png_dir: Path, gpu_resident: bool) -> None:
    dm = make_dm(png_dir, eval_batch_size=64, gpu_resident=gpu_resident)
    loader_type = ResidentBatchLoader if gpu_resident else DataLoader
    # CIFAR-10 test first, then the default OOD set (gaussian noise).
    assert [type(loader) for loader in dm.test_dataloader()] == [loader_type, loader_type]
    for loader, split in ((dm.val_dataloader(), dm.val_split), (dm.predict_dataloader(), dm.test_split)):
        batches = list(loader)
        assert len(loader) == len(batches) == -(-len(split) // 64)
        assert all(len(batch) == 2 for batch in batches)
        assert torch.equal(torch.cat([images for images, _ in batches]), split.images)  # unshuffled
        assert torch.equal(torch.cat([labels for _, labels in batches]), split.labels)


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_and_epoch_give_identical_batches_on_every_path(png_dir: Path) -> None:
    reference = train_epoch(make_dm(png_dir, num_workers=0), epoch=1)
    assert sum(len(batch[0]) for batch in reference) == N_TRAIN - 40
    assert sorted(torch.cat([batch[2] for batch in reference]).tolist()) == list(range(N_TRAIN - 40))
    assert_same_batches(reference, train_epoch(make_dm(png_dir, num_workers=0), epoch=1))
    assert_same_batches(reference, train_epoch(make_dm(png_dir, num_workers=2), epoch=1))
    resident = make_dm(png_dir, gpu_resident=True)
    assert isinstance(resident.train_dataloader(), ResidentBatchLoader)
    assert_same_batches(reference, train_epoch(resident, epoch=1))
    # A fresh datamodule asked for epoch 1 directly (as after a resume) sees the same batches.
    fresh = make_dm(png_dir, gpu_resident=True)
    train_epoch(fresh, epoch=0)
    assert_same_batches(reference, train_epoch(fresh, epoch=1))


def test_epoch_and_seed_change_order_and_augmentation(png_dir: Path) -> None:
    dm = make_dm(png_dir)
    epoch_1, epoch_2 = train_epoch(dm, 1), train_epoch(dm, 2)
    assert not torch.equal(epoch_1[0][2], epoch_2[0][2])
    other_seed = train_epoch(make_dm(png_dir, seed=4), 1)
    assert not torch.equal(epoch_1[0][2], other_seed[0][2])
    shifts_1, flips_1 = augmentation_plan(3, 1, 100)
    shifts_2, flips_2 = augmentation_plan(3, 2, 100)
    assert not torch.equal(shifts_1, shifts_2) and not torch.equal(flips_1, flips_2)
    assert shifts_1.min() >= 0 and shifts_1.max() <= 8 and flips_1.dtype == torch.bool


def by_position(batches: list) -> dict[int, torch.Tensor]:
    return {int(p): x for _, _, positions, xs in batches for p, x in zip(positions, xs, strict=True)}


def test_augmentation_is_independent_of_rank_count(png_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = by_position(train_epoch(make_dm(png_dir), 1))
    sharded: dict[int, torch.Tensor] = {}
    for rank in (0, 1):
        dm = make_dm(png_dir, gpu_resident=rank == 1)
        monkeypatch.setattr(dm, "_replicas", lambda rank=rank: (2, rank))
        sharded.update(by_position(train_epoch(dm, 1)))
    assert single.keys() == sharded.keys()
    assert all(torch.equal(single[p], sharded[p]) for p in single)


def test_sampler_shards_like_distributed_sampler() -> None:
    ranks = [EpochSeededSampler(11, seed=5, num_replicas=2, rank=rank) for rank in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    shards = [list(sampler) for sampler in ranks]
    assert [len(shard) for shard in shards] == [len(sampler) for sampler in ranks] == [6, 6]
    assert set(shards[0]) | set(shards[1]) == set(range(11))
    single = EpochSeededSampler(11, seed=5)
    single.set_epoch(3)
    full = list(single)
    assert sorted(full) == list(range(11))
    interleaved = [index for pair in zip(*shards, strict=True) for index in pair]
    assert interleaved == [*full, full[0]]  # padded with the first index, like DistributedSampler
    unshuffled = [EpochSeededSampler(11, seed=0, shuffle=False, num_replicas=2, rank=rank) for rank in (0, 1)]
    torch_samplers = [DistributedSampler(range(11), num_replicas=2, rank=rank, shuffle=False) for rank in (0, 1)]
    assert [list(s) for s in unshuffled] == [list(s) for s in torch_samplers]
    assert isinstance(ranks[0], DistributedSampler)


# ----------------------------------------------------------------------------------------------- augmentation


def test_augment_batch_hand_computed() -> None:
    image = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8).view(1, 1, 2, 2).expand(4, 1, 2, 2)
    shifts = torch.tensor([[0, 0], [1, 1], [2, 1], [1, 2]])
    flips = torch.tensor([False, True, False, True])
    # Padded with 1:  0 0 0 0 / 0 1 2 0 / 0 3 4 0 / 0 0 0 0.
    expected = torch.tensor(
        [
            [[0, 0], [0, 1]],  # top-left corner
            [[2, 1], [4, 3]],  # centre crop, mirrored
            [[3, 4], [0, 0]],  # one row down
            [[0, 2], [0, 4]],  # crop [[2, 0], [4, 0]], mirrored
        ],
        dtype=torch.uint8,
    ).view(4, 1, 2, 2)
    assert torch.equal(augment_batch(image, shifts, flips, padding=1), expected)


def test_augment_batch_matches_torchvision() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=generator)
    shifts = torch.randint(0, 9, (24, 2), generator=generator)
    shifts[:4] = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0]])  # the extremes
    flips = torch.arange(24) % 2 == 0
    out = augment_batch(images, shifts, flips)
    for image, (top, left), flip, result in zip(images, shifts.tolist(), flips, out, strict=True):
        expected = TF.crop(TF.pad(image, [4]), top, left, 32, 32)
        expected = TF.hflip(expected) if flip else expected
        assert torch.equal(result, expected)
    assert out.dtype == torch.uint8


def test_normalize_values() -> None:
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    images = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 255.0)]).to(torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(out[1, :, 1, 1], (1 - mean) / std)
    assert (CIFAR10_MEAN, CIFAR10_STD) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def test_eval_batches_are_only_normalized(png_dir: Path) -> None:
    dm = make_dm(png_dir)
    images, labels = next(iter(dm.val_dataloader()))
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(x, normalize(images)) and torch.equal(y, labels)


def test_training_batches_use_the_epoch_plan(png_dir: Path) -> None:
    dm = make_dm(png_dir)
    images, _, positions, x = train_epoch(dm, 4)[0]
    shifts, flips = augmentation_plan(3, 4, len(dm.train_split))
    assert torch.equal(x, normalize(augment_batch(images, shifts[positions], flips[positions])))
    assert torch.equal(images, dm.train_split.images[positions])


# ----------------------------------------------------------------------------------------------------- errors


def test_missing_data_error(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    dm = CIFAR10DataModule(data_dir=str(root), download=False)
    with pytest.raises(FileNotFoundError) as excinfo:
        dm.prepare_data()
    message = one_line_error(excinfo)
    assert str(root.resolve()) in message and "cifar-10-batches-py" in message
    assert "--data.data_dir" in message and "disabled" in message
    with pytest.raises(FileNotFoundError) as excinfo:
        dm.setup("fit")
    assert "--data.data_dir" in one_line_error(excinfo)


def test_incomplete_copies_are_named(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 1, 1)
    for path in sorted((tmp_path / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError) as excinfo:
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).prepare_data()
    message = one_line_error(excinfo)
    assert "no test/" in message and "lacks data_batch_1" in message


@pytest.mark.parametrize("error", [urllib.error.URLError("no route to host"), OSError("network unreachable")])
def test_failed_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def offline(*args, **kwargs):
        raise error

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(FileNotFoundError) as excinfo:
        dm.prepare_data()
    message = one_line_error(excinfo)
    assert str(tmp_path.resolve()) in message and "--data.data_dir" in message
    assert "failed" in message and type(error).__name__ in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__  # no torchvision traceback


def test_download_fills_batches_py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, download))
        write_batches_py(Path(root), 2, 1)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    dm = make_dm(tmp_path, val_size=4, download=True)
    assert calls == [(str(tmp_path.resolve()), True)]
    assert dm.source == "batches_py" and len(dm.train_split) == 16
    dm.prepare_data()  # a local copy now exists: no second download
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("data_dir", ""),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("eval_batch_size", -1),
        ("val_size", -1),
        ("train_subset", 0),
        ("split_seed", -3),
        ("seed", "7"),
        ("gpu_resident", "yes"),
        ("num_workers", -1),
        ("download", None),
    ],
)
def test_bad_arguments(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"`{name}`") as excinfo:
        CIFAR10DataModule(**{name: value})
    assert repr(value) in one_line_error(excinfo)


def test_loader_before_setup_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        CIFAR10DataModule().train_dataloader()


def test_seed_none_uses_the_lightning_global_seed(png_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "17")
    assert make_dm(png_dir, seed=None).resolved_seed == 17
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert make_dm(png_dir, seed=None).resolved_seed == 0


# ------------------------------------------------------------------------------------------- with a Trainer


class ColourNet(LightningModule):
    """Mean colour -> class: enough for the synthetic data, and it records what Lightning hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 10)
        self.seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.val_correct = 0
        self.val_total = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        assert x.dtype == torch.float32
        self.seen.append((self.current_epoch, x.clone(), y.clone()))
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_correct += int((self(x).argmax(dim=1) == y).sum())
        self.val_total += len(y)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the second loader is the OOD set; test batches also carry their positions
            self.validation_step(batch[:2], batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.1)


def test_fit_with_both_paths_sees_identical_batches_and_learns(png_dir: Path) -> None:
    runs = []
    for gpu_resident in (False, True):
        torch.manual_seed(0)
        model = ColourNet()
        dm = CIFAR10DataModule(
            str(png_dir), batch_size=32, val_size=40, seed=3, gpu_resident=gpu_resident, num_workers=0
        )
        trainer = cpu_trainer(max_epochs=3, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=dm)
        assert model.val_total == 3 * 40
        model.val_correct = model.val_total = 0
        trainer.test(model, datamodule=dm, verbose=False)
        assert model.val_total == N_TEST and model.val_correct / model.val_total > 0.5
        runs.append(model.seen)
    assert [epoch for epoch, _, _ in runs[0]] == [0] * 5 + [1] * 5 + [2] * 5
    for (epoch_a, x_a, y_a), (epoch_b, x_b, y_b) in zip(*runs, strict=True):
        assert epoch_a == epoch_b and torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
    assert not torch.equal(runs[0][0][1], runs[0][5][1])  # epochs differ
    first_epoch = torch.cat([x for epoch, x, _ in runs[0] if epoch == 0])
    assert abs(first_epoch.mean().item()) < 2  # normalised, not raw uint8 values


def test_epoch_plan_matches_manual_computation_under_fit(png_dir: Path) -> None:
    """The expected batches of epoch 1 computed by hand equal what training_step received."""
    torch.manual_seed(0)
    model = ColourNet()
    dm = CIFAR10DataModule(str(png_dir), batch_size=64, val_size=0, seed=11, num_workers=0)
    cpu_trainer(max_epochs=2, num_sanity_val_steps=0).fit(model, datamodule=dm)
    sampler = EpochSeededSampler(N_TRAIN, seed=11)
    sampler.set_epoch(1)
    order = sampler.epoch_indices()
    shifts, flips = augmentation_plan(11, 1, N_TRAIN)
    expected = normalize(augment_batch(dm.train_split.images[order], shifts[order], flips[order]))
    received = torch.cat([x for epoch, x, _ in model.seen if epoch == 1])
    assert torch.equal(received, expected)
    assert np.array_equal(torch.cat([y for epoch, _, y in model.seen if epoch == 1]), dm.train_split.labels[order])


def test_arguments_are_saved_as_hyperparameters() -> None:
    dm = CIFAR10DataModule(data_dir="/somewhere", batch_size=64, train_subset=100, gpu_resident=False)
    assert dm.hparams.batch_size == 64 and dm.hparams.train_subset == 100 and dm.hparams.data_dir == "/somewhere"


def test_loader_workers_leave_sigterm_and_sigint_to_the_main_process(cifar_dir):
    # scancel and Ctrl-C signal the whole process group: a worker that died of it would crash the main process
    # before AutoSave could write last.ckpt (tests/test_runs_cannot_be_lost.py stops a run that way).
    data = CIFAR10DataModule(str(cifar_dir), batch_size=8, val_size=32, num_workers=1, download=False)
    data.setup("fit")
    assert data.train_dataloader().worker_init_fn is _leave_stop_signals_to_the_main_process
    probe = (
        "import signal; from datamodules.cifar10 import _leave_stop_signals_to_the_main_process as f; f(0); "
        "print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"]
    serial = CIFAR10DataModule(str(cifar_dir), batch_size=8, val_size=32, num_workers=0, download=False)
    serial.setup("fit")
    assert serial.train_dataloader().worker_init_fn is None
