"""Class-balanced evaluation subsets (datamodules.subsets), the test batches' positions, and the attacked images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, DistributedSampler

import lit_modules.robustness as robustness_module
from datamodules import CIFAR10DataModule
from datamodules.cifar10 import EpochSeededSampler, IndexedTestBatch, ResidentBatchLoader, normalize
from datamodules.subsets import EVAL_SUBSET_SEED, rank_share, stratified_subset
from lit_modules import ResNet18Classifier, RobustnessMetrics
from tests.helpers import quiet_trainer
from tests.synthetic import write_batches_py


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared two-core machine a second thread mostly waits, and runs ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ stratified_subset


def class_counts(labels: torch.Tensor, mask: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels[mask], minlength=num_classes).tolist()


def test_subset_has_the_exact_size_and_balanced_classes():
    labels = torch.arange(10).repeat_interleave(7)  # class-ordered, 7 per class
    for size in (0, 1, 9, 10, 25, 69, 70):
        mask = stratified_subset(labels, size, seed=0)
        assert mask.dtype == torch.bool and mask.shape == labels.shape and mask.device.type == "cpu"
        assert int(mask.sum()) == size
        counts = class_counts(labels, mask, 10)
        assert max(counts) - min(counts) <= 1, (size, counts)
        assert all(count in (size // 10, size // 10 + 1) for count in counts)
    # The extra images of 25 = 10 * 2 + 5 go to the five lowest labels.
    assert class_counts(labels, stratified_subset(labels, 25, seed=0), 10) == [3] * 5 + [2] * 5


def test_subset_is_a_pure_function_of_the_seed_and_nested_in_size():
    labels = torch.arange(10).repeat_interleave(50)
    first = stratified_subset(labels, 100, seed=7)
    assert torch.equal(first, stratified_subset(labels, 100, seed=7))
    assert torch.equal(first, stratified_subset(labels.clone(), 100, seed=7))
    assert not torch.equal(first, stratified_subset(labels, 100, seed=8))
    # Random inside each class, not the first images of the class.
    assert not torch.equal(first, (torch.arange(500) % 50) < 10)
    # A smaller subset of the same seed is contained in a larger one.
    smaller = stratified_subset(labels, 37, seed=7)
    assert bool((first | ~smaller).all())
    # The global random state plays no part.
    torch.manual_seed(123)
    assert torch.equal(first, stratified_subset(labels, 100, seed=7))


def test_short_classes_give_their_shortfall_to_the_others():
    # Class 0 has 1 image, class 1 has 10, class 2 has 10 (labels shuffled, and not 0..C-1).
    labels = torch.tensor([5] * 1 + [8] * 10 + [9] * 10)[torch.randperm(21, generator=torch.Generator().manual_seed(0))]
    expected = {3: [1, 1, 1], 15: [1, 7, 7], 20: [1, 10, 9], 21: [1, 10, 10]}
    for size, counts in expected.items():
        mask = stratified_subset(labels, size, seed=3)
        assert int(mask.sum()) == size
        assert [int((labels[mask] == label).sum()) for label in (5, 8, 9)] == counts, size
    # Several short classes, the rest balanced: 2 + 3 + 3 * 5 = 20.
    labels = torch.tensor([0] * 2 + [1] * 3 + [2] * 50 + [3] * 50 + [4] * 50)
    assert class_counts(labels, stratified_subset(labels, 20, seed=0), 5) == [2, 3, 5, 5, 5]


def test_subset_argument_errors():
    labels = torch.arange(4)
    for bad_size in (-1, 5, 2.0, True):
        with pytest.raises(ValueError, match="size"):
            stratified_subset(labels, bad_size, seed=0)
    with pytest.raises(ValueError, match="labels"):
        stratified_subset(labels.float(), 2, seed=0)
    with pytest.raises(ValueError, match="labels"):
        stratified_subset(labels.view(2, 2), 2, seed=0)
    assert stratified_subset(torch.zeros(0, dtype=torch.long), 0, seed=0).shape == (0,)


@pytest.mark.parametrize("num_samples, world_size", [(100, 3), (10, 4), (12, 2)])
def test_rank_shares_cover_the_subset_once_despite_padding(num_samples, world_size):
    labels = torch.arange(num_samples) % 5
    subset = stratified_subset(labels, num_samples // 2, seed=0)
    for make_sampler in (
        lambda rank: EpochSeededSampler(num_samples, seed=0, shuffle=False, num_replicas=world_size, rank=rank),
        lambda rank: DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False),
    ):
        attacked = []
        for rank in range(world_size):
            positions = torch.tensor(list(make_sampler(rank)))  # this rank's padded shard
            share = rank_share(subset, rank, world_size)
            attacked.append(positions[share[positions]])
        attacked = torch.cat(attacked)
        assert sorted(attacked.tolist()) == subset.nonzero().squeeze(1).tolist()  # each exactly once
    assert rank_share(subset, 0, 1) is subset
    with pytest.raises(ValueError, match="rank"):
        rank_share(subset, 2, 2)


# ------------------------------------------------------------------------------------------------ datamodule


@pytest.fixture(scope="module")
def ordered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pickled batches, class-major like the image folder: 1000 test images, the first 100 all class 0."""
    return write_batches_py(tmp_path_factory.mktemp("ordered"), train_per_class=2, test_per_class=100)


def cpu_trainer(tmp_path: Path, *callbacks: RobustnessMetrics) -> Trainer:
    return quiet_trainer(tmp_path, callbacks)


def make_dm(root: Path, **kwargs) -> CIFAR10DataModule:
    options = dict(val_size=0, batch_size=16, eval_batch_size=96, seed=3, num_workers=0, download=False, ood=None)
    return CIFAR10DataModule(data_dir=str(root), **{**options, **kwargs})


def set_up(dm: CIFAR10DataModule, tmp_path: Path) -> CIFAR10DataModule:
    dm.trainer = cpu_trainer(tmp_path)
    dm.prepare_data()
    dm.setup("test")
    return dm


def test_datamodule_subset_is_balanced_and_independent_of_the_run_seed(ordered_dir, tmp_path, monkeypatch):
    dm = set_up(make_dm(ordered_dir), tmp_path)
    labels = dm.test_split.labels
    assert torch.equal(labels, torch.arange(10).repeat_interleave(100))  # class-ordered
    for size in (100, 105):
        subset = dm.evaluation_subset(size)
        counts = class_counts(labels, subset, 10)
        assert int(subset.sum()) == size and max(counts) - min(counts) <= 1, counts
    assert torch.equal(dm.evaluation_subset(100), stratified_subset(labels, 100, EVAL_SUBSET_SEED))
    assert bool(dm.evaluation_subset(5000).all())  # more than the test set: all of it
    # Another run seed, a seed_everything seed and a datamodule seed make no difference.
    monkeypatch.setenv("PL_GLOBAL_SEED", "17")
    other = set_up(make_dm(ordered_dir, seed=None), tmp_path)
    assert torch.equal(other.evaluation_subset(100), dm.evaluation_subset(100))
    with pytest.raises(ValueError, match="size"):
        dm.evaluation_subset(-1)
    with pytest.raises(RuntimeError, match="setup"):
        make_dm(ordered_dir).evaluation_subset(10)


@pytest.mark.parametrize("gpu_resident, num_workers", [(False, 0), (False, 1), (True, 0)])
def test_test_batches_carry_their_positions_on_both_paths(ordered_dir, tmp_path, gpu_resident, num_workers):
    options = dict(ood="gaussian", ood_size=50, gpu_resident=gpu_resident, num_workers=num_workers)
    dm = set_up(make_dm(ordered_dir, **options), tmp_path)
    test_loader, ood_loader = dm.test_dataloader()
    assert isinstance(test_loader, ResidentBatchLoader if gpu_resident else DataLoader)
    batches = list(test_loader)
    assert all(isinstance(batch, IndexedTestBatch) for batch in batches)
    positions = torch.cat([batch.positions for batch in batches])
    assert torch.equal(positions, torch.arange(len(dm.test_split)))
    for batch in batches:
        assert torch.equal(batch.images, dm.test_split.images[batch.positions])
        assert torch.equal(batch.labels, dm.test_split.labels[batch.positions])
    # The transfer hook keeps the positions and never augments, even while training (a callback evaluating).
    dm.trainer.training = True
    out = dm.on_after_batch_transfer(batches[1], dataloader_idx=0)
    dm.trainer.training = False
    assert isinstance(out, IndexedTestBatch)
    assert torch.equal(out.images, normalize(batches[1].images)) and torch.equal(out.positions, batches[1].positions)
    # OOD and predict batches stay (images, labels).
    for loader in (ood_loader, dm.predict_dataloader()):
        batch = next(iter(loader))
        assert type(batch) is tuple and len(batch) == 2
        assert len(dm.on_after_batch_transfer(batch, dataloader_idx=1)) == 2


# ------------------------------------------------------------------------------------------------ attacks


def record_attacked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record the pixels and labels every FGSM call of the robustness callback receives."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = robustness_module.fgsm

    def spy(model, pixels, labels, **kwargs):
        calls.append((pixels.detach().clone(), labels.detach().clone()))
        return original(model, pixels, labels, **kwargs)

    monkeypatch.setattr(robustness_module, "fgsm", spy)
    return calls


def airplane_model() -> ResNet18Classifier:
    """An untrained width-4 model whose output bias makes it answer class 0 for every image, attacked or not."""
    model = ResNet18Classifier(width=4)
    with torch.no_grad():
        model.linear.bias.zero_()
        model.linear.bias[0] = 50.0
    return model


def test_untrained_model_is_attacked_on_the_balanced_subset(ordered_dir, tmp_path, monkeypatch):
    seed_everything(0)
    calls = record_attacked(monkeypatch)
    dm = make_dm(ordered_dir)
    model = airplane_model()
    robustness = RobustnessMetrics(adv_samples=100, pgd_steps=2)
    trainer = cpu_trainer(tmp_path, robustness)
    trainer.test(model, datamodule=dm, verbose=False)
    subset = dm.evaluation_subset(100)
    pixels = torch.cat([pixels for pixels, _ in calls])
    labels = torch.cat([labels for _, labels in calls])
    # Exactly the subset's images, in test-set order, 10 of each class; not the first 100 (all airplanes).
    assert robustness.attacked == 100 and len(labels) == 100
    assert torch.equal(labels, dm.test_split.labels[subset])
    assert torch.equal(pixels.mul(255).round().to(torch.uint8), dm.test_split.images[subset])
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10
    # Always answering "airplane" is right on a tenth of a balanced subset (it was 1.0 on the first 100 images).
    metrics = trainer.callback_metrics
    assert float(metrics["test/acc"]) == pytest.approx(0.1)
    assert float(metrics["test/adv_fgsm_acc"]) == pytest.approx(0.1)
    assert float(metrics["test/adv_pgd_acc"]) == pytest.approx(0.1)
    # An untrained model without the bias: near chance too.
    seed_everything(0)
    plain = ResNet18Classifier(width=4)
    trainer = cpu_trainer(tmp_path, RobustnessMetrics(adv_samples=100, pgd_steps=1))
    trainer.test(plain, datamodule=dm, verbose=False)
    assert float(trainer.callback_metrics["test/adv_fgsm_acc"]) < 0.35


class NoSubsetDataModule(CIFAR10DataModule):
    """A datamodule without ``evaluation_subset``, as a user's own might be."""

    evaluation_subset = None


def test_without_a_subset_the_first_images_are_attacked_with_a_warning(ordered_dir, tmp_path, monkeypatch):
    seed_everything(0)
    calls = record_attacked(monkeypatch)
    dm = NoSubsetDataModule(
        data_dir=str(ordered_dir), val_size=0, eval_batch_size=96, seed=3, num_workers=0, download=False, ood=None
    )
    model = airplane_model()
    robustness = RobustnessMetrics(adv_samples=100, pgd_steps=1)
    trainer = cpu_trainer(tmp_path, robustness)
    with pytest.warns(UserWarning, match="not stratified") as record:
        trainer.test(model, datamodule=dm, verbose=False)
    assert sum("not stratified" in str(warning.message) for warning in record) == 1
    labels = torch.cat([labels for _, labels in calls])
    # The old behaviour: the first 100 images of a class-ordered test set are all airplanes, so a model that always
    # answers "airplane" looks perfectly robust.
    assert robustness.attacked == 100 and torch.equal(labels, torch.zeros(100, dtype=torch.long))
    assert float(trainer.callback_metrics["test/adv_fgsm_acc"]) == pytest.approx(1.0)
