"""``torch.compile`` through the classifier's ``compile=True`` path: mask changes never force a recompile.

Masks are applied in place to the parameters after the optimizer step, outside the compiled forward, so neither a new
topology (RigL, SET) nor a sparser mask (a pruning round) changes anything Dynamo guards on.

The classifier compiles with torch's default backend, inductor, which generates C++ on a CPU and takes about a minute
for this network. These tests route its ``self.compile()`` to Dynamo's counting backend (``CompileCounter``: the
same tracing and guards, the captured graph run eagerly), which counts every graph compiled.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from lightning.pytorch import Callback, seed_everything
from torch._dynamo.testing import CompileCounter

from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier
from pruning_callbacks import LotteryTicket
from pruning_callbacks.callbacks.dynamic import random_sparse_masks
from pruning_callbacks.engine.apply import MaskApplier
from pruning_callbacks.engine.parameters import prunable_parameters
from tests.helpers import quiet_trainer


@pytest.fixture
def compile_counter(monkeypatch):
    """Every ``torch.compile`` call (the classifier's ``self.compile()`` included) uses one counting backend."""
    counter = CompileCounter()
    compile_ = torch.compile

    def counting_compile(*args, **kwargs):
        kwargs["backend"] = counter
        return compile_(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", counting_compile)
    torch._dynamo.reset()
    yield counter
    torch._dynamo.reset()


def train_steps(model, optimizer, x, y, steps):
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_mask_changes_do_not_recompile_the_classifier(compile_counter):
    torch.manual_seed(0)
    model = ResNet18Classifier(width=4, compile=True)
    model.configure_model()
    optimizer = model.configure_optimizers()["optimizer"]
    params = prunable_parameters(model)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    applier = MaskApplier(params, random_sparse_masks(params, 0.5, "erk", seed=0))
    applier.apply_()
    handle = applier.attach(optimizer)
    train_steps(model, optimizer, x, y, steps=2)
    assert compile_counter.frame_count == 1

    for sparsity, seed in ((0.5, 1), (0.9, 2)):  # a new topology, then a sparser mask
        masks = random_sparse_masks(params, sparsity, "erk", seed=seed)
        handle.remove()
        applier = MaskApplier(params, masks)
        applier.apply_()
        applier.mask_optimizer_state_(optimizer)
        handle = applier.attach(optimizer)
        train_steps(model, optimizer, x, y, steps=2)
        assert compile_counter.frame_count == 1
        for name, mask in masks.items():
            assert not params[name][~mask].any(), name  # the compiled model trains with the new masks exact


class GraphsAtEpochStart(Callback):
    def __init__(self, counter: CompileCounter) -> None:
        self.counter = counter
        self.at_epoch_start: list[int] = []
        self.at_end: int | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.at_epoch_start.append(self.counter.frame_count)

    def on_fit_end(self, trainer, pl_module):
        self.at_end = self.counter.frame_count


def test_iterative_pruning_rounds_after_the_first_do_not_recompile(compile_counter, cifar_dir, tmp_path):
    """Round 0 compiles (training, validation and test shapes); rounds 1 and 2 prune, rewind and retrain on them."""
    seed_everything(0)
    data = CIFAR10DataModule(str(cifar_dir), batch_size=16, val_size=32, train_subset=96, num_workers=0, download=False)
    pruner = LotteryTicket(rounds=2, epochs_per_round=1, prune_fraction=0.2)
    graphs = GraphsAtEpochStart(compile_counter)
    trainer = quiet_trainer(tmp_path, [pruner, graphs], max_epochs=3)
    trainer.fit(ResNet18Classifier(width=4, compile=True), datamodule=data)

    assert [row["round"] for row in pruner.rows] == [0, 1, 2]
    assert pruner.masks.sparsity() == pytest.approx(1 - 0.8**2, abs=1e-3)
    first_round_graphs = graphs.at_epoch_start[1]
    assert first_round_graphs >= 1
    assert graphs.at_epoch_start[2] == graphs.at_end == first_round_graphs
