"""PruneAtInit with SNIP, GraSP and SynFlow inside a Trainer: the batches it scores on, what it leaves alone."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier
from pruning_callbacks import PruneAtInit
from pruning_callbacks.callbacks import prune_at_init
from tests.helpers import quiet_trainer


def loader(n: int = 32, batch_size: int = 16, seed: int = 0, scale: float = 1.0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=generator) * scale
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(tmp_path, callbacks, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, callbacks, **{"max_epochs": 1, **kwargs})


class FirstBatch(ResNet18Classifier):
    """Records the first training batch exactly as training_step receives it."""

    first_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def training_step(self, batch, batch_idx):
        if self.first_batch is None:
            self.first_batch = (batch[0].clone(), batch[1].clone())
        return super().training_step(batch, batch_idx)


class RandomState(Callback):
    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.states.append(torch.get_rng_state())


def test_snip_scores_the_first_training_batch_transformed_as_training_transforms_it(cifar_dir, tmp_path, monkeypatch):
    seen: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    fetch = prune_at_init.training_batches

    def recording_fetch(trainer, num_batches):
        batches = fetch(trainer, num_batches)
        seen.append(batches)
        return batches

    monkeypatch.setattr(prune_at_init, "training_batches", recording_fetch)
    torch.manual_seed(0)
    model = FirstBatch(width=4)
    initial = copy.deepcopy(model)
    data = CIFAR10DataModule(cifar_dir, batch_size=16, val_size=0, train_subset=32, num_workers=0, download=False)
    callback = PruneAtInit(target_sparsity=0.8, score="snip", scope="global", num_batches=1)
    before, after = RandomState(), RandomState()
    trainer(tmp_path, [before, callback, after], max_steps=1).fit(model, datamodule=data)

    (batches,) = seen
    assert len(batches) == 1
    inputs, targets = batches[0]
    assert inputs.dtype == torch.float32 and abs(float(inputs.mean())) < 3  # normalized, not uint8
    assert torch.equal(inputs, model.first_batch[0]) and torch.equal(targets, model.first_batch[1])
    assert torch.equal(before.states[0], after.states[0])  # fetching and scoring drew no global random numbers
    # The mask is SNIP's on that batch, computed on the untouched initial model.
    expected = callback.recipe.masks(
        {name: initial.get_parameter(name) for name in callback.parameters}, seed=0, module=initial, batches=batches
    )
    assert callback.masks == expected and callback.masks.remaining() == round(0.2 * callback.masks.total)


@pytest.mark.parametrize("score", ["snip", "grasp"])
def test_data_dependent_scores_work_with_a_plain_dataloader_and_leave_the_kept_weights_untouched(tmp_path, score):
    torch.manual_seed(0)
    model = ResNet18Classifier(width=4)
    initial = {name: value.clone() for name, value in model.state_dict().items()}

    class CheckBeforeTraining(Callback):
        checked = False

        def on_train_start(self, trainer, pl_module) -> None:
            masks = callback.masks
            for name, value in pl_module.state_dict().items():
                expected = initial[name] * masks[name] if name in masks else initial[name]
                assert torch.equal(value, expected), name
            assert all(param.grad is None for param in pl_module.parameters())
            self.checked = True

    callback = PruneAtInit(target_sparsity=0.9, score=score, scope="global", num_batches=2)
    check = CheckBeforeTraining()
    trainer(tmp_path, [callback, check]).fit(model, train_dataloaders=loader())
    assert check.checked
    assert callback.masks.remaining() == round(0.1 * callback.masks.total)
    assert min(callback.masks.remaining_per_layer().values()) >= 1


def test_synflow_mask_does_not_depend_on_the_data_and_takes_the_input_shape_from_a_batch(tmp_path):
    masks = []
    for seed, scale in ((0, 1.0), (1, 50.0)):
        torch.manual_seed(0)
        callback = PruneAtInit(target_sparsity=0.9, score="synflow", scope="global", iterations=3)
        trainer(tmp_path, [callback], max_steps=1).fit(ResNet18Classifier(width=4), loader(seed=seed, scale=scale))
        masks.append(callback.masks)
    assert masks[0] == masks[1]
    assert masks[0].remaining() == round(0.1 * masks[0].total)


def test_a_target_that_would_empty_layers_fails_at_setup(tmp_path):
    callback = PruneAtInit(target_sparsity=0.9999, score="snip", scope="global")
    with pytest.raises(ValueError, match=r"keeps 4 of 44012 weights, fewer than the 21 .* largest feasible sparsity"):
        trainer(tmp_path, [callback]).fit(ResNet18Classifier(width=4), train_dataloaders=loader())
