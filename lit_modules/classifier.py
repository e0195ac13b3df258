"""The ResNet18 ``LightningModule`` that every pruning method reuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lit_modules.resnet import build_resnet18_layers, resnet18_forward

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULERS = ("multistep", "cosine", "constant")


class ResNet18Classifier(LightningModule):
    """CIFAR ResNet18 image classifier with the seed report's training recipe as defaults.

    The network's layers are attributes of this module itself (no ``net.`` prefix), so a Lightning checkpoint's
    ``state_dict`` is a plain ResNet18 state dict that loads into :class:`lit_modules.resnet.ResNet18` or into the
    ``kuangliu/pytorch-cifar`` ResNet18 without this project. Pruning callbacks name weights the same way
    (``layer1.0.conv1.weight``).

    Defaults follow He et al. 2016 (https://arxiv.org/abs/1512.03385) as trained in the seed report: SGD, lr 0.1,
    momentum 0.9, weight decay 5e-4, MultiStepLR at epochs 60/120/160 with gamma 0.2, for 200 epochs.

    Args:
        width: Channels of the first stage; 64 gives the standard 11,173,962-parameter network.
        num_classes: Number of classes.
        optimizer: ``sgd`` or ``adamw``.
        lr: Learning rate.
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: Weight decay.
        nesterov: Nesterov momentum for SGD.
        lr_scheduler: ``multistep`` (per epoch, at ``milestones``), ``cosine`` (per epoch over
            ``cosine_epochs``) or ``constant``.
        milestones: Epochs at which ``multistep`` multiplies the learning rate by ``gamma``.
        gamma: Factor for ``multistep``.
        cosine_epochs: Period of the cosine schedule; ``None`` means the Trainer's ``max_epochs``.
        channels_last: Run convolutions in channels-last memory format (faster with mixed precision on GPUs).
        compile: Compile the module with ``torch.compile``. Masks are applied in place to the parameters, so
            changing masks never forces a recompile.

    Raises:
        ValueError: If an option is outside its allowed values.
    """

    def __init__(
        self,
        width: int = 64,
        num_classes: int = 10,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        lr_scheduler: Literal["multistep", "cosine", "constant"] = "multistep",
        milestones: Sequence[int] = (60, 120, 160),
        gamma: float = 0.2,
        cosine_epochs: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {lr_scheduler!r}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if list(milestones) != sorted(milestones) or any(m <= 0 for m in milestones):
            raise ValueError(f"milestones must be increasing positive epochs, got {list(milestones)}")
        if cosine_epochs is not None and cosine_epochs < 1:
            raise ValueError(f"cosine_epochs must be a positive integer or null, got {cosine_epochs}")
        self.save_hyperparameters()
        for name, layer in build_resnet18_layers(width, num_classes).items():
            self.add_module(name, layer)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self._compiled = False

    def configure_model(self) -> None:
        """Apply the speed options once, before training (memory format, then compilation)."""
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile and not self._compiled:
            # Compiles this module's __call__ in place: parameter names and state_dict keys stay unchanged.
            self.compile()
            self._compiled = True

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for normalized images of shape ``(N, 3, 32, 32)``."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return resnet18_forward(self, x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy step; logs ``train/loss`` and ``train/acc``."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits.detach(), y)
        # No prog_bar on per-step values: the progress bar would read them back to the host at every step.
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Log ``val/loss`` and ``val/acc``."""
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Log ``test/loss`` and ``test/acc``."""
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Return class probabilities."""
        return self(batch[0]).softmax(dim=-1)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        accuracy(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        """Log the learning rate of the first parameter group."""
        self.log("train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """Build the optimizer and the per-epoch learning-rate schedule from the hyperparameters."""
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                self.parameters(),
                lr=hp.lr,
                momentum=hp.momentum,
                weight_decay=hp.weight_decay,
                nesterov=hp.nesterov,
            )
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_scheduler == "multistep":
            scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=list(hp.milestones), gamma=hp.gamma
            )
        elif hp.lr_scheduler == "cosine":
            period = hp.cosine_epochs or self.trainer.max_epochs
            if period is None or period < 1:
                raise ValueError(
                    "lr_scheduler 'cosine' needs model.cosine_epochs or trainer.max_epochs to be a positive "
                    f"integer, got cosine_epochs={hp.cosine_epochs}, max_epochs={self.trainer.max_epochs}"
                )
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=period)
        else:
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
