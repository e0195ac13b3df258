"""The shared tiny model and data for callback tests: a whole multi-round run in about a second.

:class:`TinyClassifier` has what the callbacks look at in the ResNet (prunable ``Linear`` weights, a BatchNorm with
running statistics, SGD with momentum, a per-epoch MultiStepLR schedule, ``val/acc`` and ``test/acc``), without the
convolutions. Fit a ResNet only where the ResNet matters (channel masks, the CLI, the datamodule).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES, CLASSES = 16, 10


class TinyClassifier(LightningModule):
    """``fc1 -> bn1 -> relu -> fc2`` with the classifier's optimizer recipe.

    Args:
        lr: SGD learning rate (momentum 0.9, weight decay 5e-4).
        milestones: Epochs at which MultiStepLR multiplies the learning rate by ``gamma``.
        gamma: The factor.
        hidden: Width of the hidden layer.
    """

    def __init__(self, lr: float = 0.1, milestones: Sequence[int] = (), gamma: float = 0.1, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.fc1 = nn.Linear(FEATURES, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.bn1(self.fc1(x))))

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def _accuracy(self, batch: Sequence[Tensor], name: str) -> None:
        x, y = batch
        self.log(name, (self(x).argmax(-1) == y).float().mean())

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._accuracy(batch, "val/acc")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._accuracy(batch, "test/acc")

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.hparams.milestones), self.hparams.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def tensors(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, FEATURES, generator=generator)
    return TensorDataset(inputs, torch.randint(0, CLASSES, (n,), generator=generator))


class TinyData(LightningDataModule):
    """Fixed random train (96), validation (32) and test (32) sets, batch 16, in a fixed order."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(tensors(96, 0), batch_size=16)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(tensors(32, 1), batch_size=16)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(tensors(32, 2), batch_size=16)


def fit_tiny(
    callbacks: Sequence[Callback],
    root: Path,
    model: LightningModule | None = None,
    model_kwargs: dict | None = None,
    **trainer_kwargs: object,
) -> Trainer:
    """Fit ``model`` on :class:`TinyData` on the CPU; by default a :class:`TinyClassifier(**model_kwargs)` drawn
    after seeding, so every call starts from the same weights."""
    seed_everything(0)
    if model is None:
        model = TinyClassifier(**(model_kwargs or {}))
    options: dict = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root,
    )  # fmt: skip
    options.update(trainer_kwargs)
    trainer = Trainer(callbacks=list(callbacks), **options)
    trainer.fit(model, datamodule=TinyData())
    return trainer
