"""The ResNet18 ``LightningModule`` that every pruning method reuses."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lit_modules.precision import channels_last_by_default
from lit_modules.resnet import build_resnet18_layers, resnet18_forward
from lit_modules.robustness import ATTACK_OPTIONS, RobustnessMetrics
from pruning_callbacks.engine.checks import ToolkitDeprecationWarning, finite_number
from pruning_callbacks.lightning_compat import attached_trainer

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
        channels_last: Run convolutions in channels-last memory format (faster with mixed precision on GPUs, and
            with bf16 on a CPU); ``None`` (the default) turns it on when the trainer runs on a CUDA device, or on a
            CPU in a bf16 precision, and off elsewhere (:func:`lit_modules.precision.channels_last_by_default`).
        compile: Compile the module with ``torch.compile``. Masks are applied in place to the parameters, so
            changing masks never forces a recompile.
        compile_backend: The ``torch.compile`` backend (``inductor``; ``eager`` or ``aot_eager`` to debug).
        adv_samples: Deprecated: an option of :class:`lit_modules.RobustnessMetrics` (``--robustness.adv_samples``).
            Accepted for one release with a ``DeprecationWarning``: given here (``model.adv_samples`` in an old
            config), it adds a ``RobustnessMetrics`` with these settings to the trainer (:meth:`configure_callbacks`).
        adv_eps: Deprecated, as ``adv_samples``.
        pgd_steps: Deprecated, as ``adv_samples``.
        pgd_step_size: Deprecated, as ``adv_samples``.

    Metrics: ``train/loss``, ``train/acc``, ``train/lr``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc``
    (top-1 accuracy and mean cross-entropy). :meth:`test_step` returns the batch's logits, from which the
    :class:`lit_modules.RobustnessMetrics` callback (added by ``cli.py`` by default) measures calibration, OOD
    detection and adversarial accuracy. Test batches are ``(images, labels)`` or ``(images, labels, positions)``;
    an optional second test dataloader is an out-of-distribution set, whose batches are only passed through.

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
        channels_last: bool | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        adv_samples: int | None = None,
        adv_eps: float | None = None,
        pgd_steps: int | None = None,
        pgd_step_size: float | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {lr_scheduler!r}")
        # Written as "not (allowed)" so that NaN, which fails every comparison, is refused too.
        if not finite_number(lr) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr}")
        if not finite_number(momentum) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not finite_number(weight_decay) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay}")
        if not finite_number(gamma) or not gamma > 0:
            raise ValueError(f"gamma must be a positive number, got {gamma}")
        if (
            any(isinstance(m, bool) or not isinstance(m, int) for m in milestones)
            or list(milestones) != sorted(milestones)
            or any(m <= 0 for m in milestones)
        ):
            raise ValueError(f"milestones must be increasing positive epochs, got {list(milestones)}")
        if cosine_epochs is not None and (
            isinstance(cosine_epochs, bool) or not isinstance(cosine_epochs, int) or cosine_epochs < 1
        ):
            raise ValueError(f"cosine_epochs must be a positive integer or null, got {cosine_epochs}")
        attacks = {
            name: value
            for name, value in zip(ATTACK_OPTIONS, (adv_samples, adv_eps, pgd_steps, pgd_step_size), strict=True)
            if value is not None
        }
        if attacks:
            warnings.warn(
                f"ResNet18Classifier: {', '.join(attacks)} moved to the RobustnessMetrics callback "
                f"(--robustness.{next(iter(attacks))} on the command line); the model options are deprecated and "
                "work for one more release.",
                ToolkitDeprecationWarning,
                stacklevel=2,
            )
        # Given here by an old config or code: the callback that now owns them, with these settings (checked now).
        self._robustness = RobustnessMetrics(**attacks) if attacks else None
        self.save_hyperparameters()
        for name, layer in build_resnet18_layers(width, num_classes).items():
            self.add_module(name, layer)
        # validate_args=False: the checks call torch.unique on the targets, a host sync at every step.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self._compiled = False
        self._channels_last = bool(channels_last)
        # Lets Lightning's model summary count FLOPs (and data-free scores take the input shape) without data.
        self.example_input_array = torch.zeros(1, 3, 32, 32)  # one image: the summary counts FLOPs per image

    def configure_model(self) -> None:
        """Apply the speed options once, before training (memory format, then compilation)."""
        self._channels_last = self._resolve_channels_last()
        if self._channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile and not self._compiled:
            # Compiles this module's __call__ in place: parameter names and state_dict keys stay unchanged.
            self.compile(backend=self.hparams.compile_backend)
            self._compiled = True

    def _resolve_channels_last(self) -> bool:
        if self.hparams.channels_last is not None:
            return bool(self.hparams.channels_last)
        trainer = attached_trainer(self)
        if trainer is None:
            return False
        return channels_last_by_default(trainer.strategy.root_device.type, trainer.precision)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for normalized images of shape ``(N, 3, 32, 32)``."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return resnet18_forward(self, x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy step; logs ``train/loss`` and ``train/acc``."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits.detach(), y)  # forward() would also compute an unlogged batch accuracy
        # No prog_bar on per-step values: the progress bar would read them back to the host at every step.
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Log ``val/loss`` and ``val/acc``."""
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Dataloader 0 (the test set): log ``test/loss`` and ``test/acc``; any dataloader: return the logits.

        Every name is logged without Lightning's ``/dataloader_idx_N`` suffix. The logits are what
        :class:`lit_modules.RobustnessMetrics` measures; an out-of-distribution set (dataloader 1) is only passed
        through, for it.

        Raises:
            ValueError: If there are more than two test dataloaders.
        """
        if dataloader_idx == 1:
            return self(batch[0])
        if dataloader_idx != 0:
            raise ValueError(
                f"test_step expects at most two test dataloaders (CIFAR-10 test, OOD set), got dataloader_idx "
                f"{dataloader_idx}"
            )
        logits, _ = self._evaluate(batch, "test", self.test_acc, add_dataloader_idx=False)
        return logits

    def configure_callbacks(self) -> list[Callback]:
        """The :class:`lit_modules.RobustnessMetrics` that the deprecated attack options ask for, if any were given."""
        return [self._robustness] if self._robustness is not None else []

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Return class probabilities."""
        return self(batch[0]).softmax(dim=-1)

    def _evaluate(
        self, batch: Sequence[Tensor], stage: str, accuracy: MulticlassAccuracy, add_dataloader_idx: bool = True
    ) -> tuple[Tensor, Tensor]:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        accuracy.update(logits, y)
        self.log(f"{stage}/loss", loss, sync_dist=True, add_dataloader_idx=add_dataloader_idx)
        self.log(f"{stage}/acc", accuracy, prog_bar=True, add_dataloader_idx=add_dataloader_idx)
        return logits, loss

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
