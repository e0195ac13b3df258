"""The ResNet18 ``LightningModule`` that every pruning method reuses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassCalibrationError

from datamodules.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from datamodules.subsets import rank_share
from lit_modules.metrics import CALIBRATION_BINS, fgsm, msp_scores, pgd
from lit_modules.precision import channels_last_by_default
from lit_modules.resnet import build_resnet18_layers, resnet18_forward
from pruning_callbacks.engine.seeding import generator as seeded_generator
from pruning_callbacks.engine.seeding import global_seed
from pruning_callbacks.lightning_compat import attached_trainer

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULERS = ("multistep", "cosine", "constant")


def _finite_number(value: object) -> bool:
    """Whether ``value`` is a real, finite number (not a bool, a string, NaN or infinity)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


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
        adv_samples: Number of test images attacked with FGSM and PGD for ``test/adv_fgsm_acc`` and
            ``test/adv_pgd_acc``; 0 disables both. With :class:`datamodules.CIFAR10DataModule` these are exactly the
            images of its :meth:`~datamodules.CIFAR10DataModule.evaluation_subset` (class-balanced to within one
            image per class, the same images for every run, seed, method and number of DDP ranks; all test images
            when ``adv_samples`` exceeds the test set). With a datamodule without ``evaluation_subset`` or test
            batches without positions, the first ``ceil(adv_samples / world_size)`` images of each rank's test
            stream are attacked instead, with a warning that this subset is not stratified.
        adv_eps: L∞ radius of both attacks in pixel units (``8/255``, the usual CIFAR-10 budget).
        pgd_steps: Number of PGD steps.
        pgd_step_size: PGD step size in pixel units.

    Test metrics (:meth:`test_step`), with the CIFAR-10 test set as dataloader 0 and an optional out-of-distribution
    set as dataloader 1 (``CIFAR10DataModule(ood=...)``):

    * ``test/acc``, ``test/loss``: top-1 accuracy and mean cross-entropy;
    * ``test/ece``: expected calibration error, 15 equal-width bins, l1 (Guo et al. 2017,
      https://arxiv.org/abs/1706.04599); ``test/nll``: mean negative log-likelihood (the same value as ``test/loss``,
      under the name calibration studies use);
    * ``test/ood_auroc``: AUROC of the maximum softmax probability, CIFAR-10 test positive, OOD negative (Hendrycks &
      Gimpel 2017, https://arxiv.org/abs/1610.02136); only with a second test dataloader;
    * ``test/adv_fgsm_acc``, ``test/adv_pgd_acc``: accuracy under FGSM (Goodfellow et al. 2015,
      https://arxiv.org/abs/1412.6572) and L∞ PGD with a seeded random start (Madry et al. 2018,
      https://arxiv.org/abs/1706.06083) on the ``adv_samples`` test images of the datamodule's evaluation subset
      (see ``adv_samples``). The attacks work in pixel space: they undo the CIFAR-10 standardisation of
      :class:`datamodules.CIFAR10DataModule` (``CIFAR10_MEAN`` / ``CIFAR10_STD``), perturb within ``[0, 1]`` and
      standardise again.

    All are torchmetrics states or epoch means reduced across DDP ranks at the end of the test epoch, never read
    back to the host during it. (Picking a batch's images of the attack subset costs one host sync per test batch,
    nothing next to the attacks themselves.)

    Test batches of dataloader 0 are ``(images, labels)`` or ``(images, labels, positions)``, ``positions`` being
    each image's index in the test set (:class:`datamodules.cifar10.IndexedTestBatch`, as
    :class:`datamodules.CIFAR10DataModule` serves them).

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
        adv_samples: int = 1000,
        adv_eps: float = 8 / 255,
        pgd_steps: int = 10,
        pgd_step_size: float = 2 / 255,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {lr_scheduler!r}")
        # Written as "not (allowed)" so that NaN, which fails every comparison, is refused too.
        if not _finite_number(lr) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr}")
        if not _finite_number(momentum) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not _finite_number(weight_decay) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay}")
        if not _finite_number(gamma) or not gamma > 0:
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
        if isinstance(adv_samples, bool) or not isinstance(adv_samples, int) or adv_samples < 0:
            raise ValueError(f"adv_samples must be an integer >= 0 (0 disables the attacks), got {adv_samples!r}")
        if not _finite_number(adv_eps) or not 0 <= adv_eps <= 1:
            raise ValueError(f"adv_eps must be in [0, 1] (pixel units, e.g. 0.0313725 for 8/255), got {adv_eps}")
        if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, int) or pgd_steps < 1:
            raise ValueError(f"pgd_steps must be a positive integer, got {pgd_steps!r}")
        if not _finite_number(pgd_step_size) or not 0 < pgd_step_size <= 1:
            raise ValueError(
                f"pgd_step_size must be in (0, 1] (pixel units, e.g. 0.0078431 for 2/255), got {pgd_step_size}"
            )
        self.save_hyperparameters()
        for name, layer in build_resnet18_layers(width, num_classes).items():
            self.add_module(name, layer)
        # validate_args=False: the checks call torch.unique on the targets, a host sync at every step.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_ece = MulticlassCalibrationError(num_classes, n_bins=CALIBRATION_BINS, norm="l1", validate_args=False)
        self.test_ood_auroc = BinaryAUROC(thresholds=None, validate_args=False)
        self.test_adv_fgsm_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_adv_pgd_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self._compiled = False
        self._channels_last = bool(channels_last)
        self._adv_seen = 0
        self._adv_subset: Tensor | None = None
        self._warned_first_n = False
        self._with_ood = False
        self._pgd_generator: torch.Generator | None = None
        self._pixel_stats: tuple[Tensor, Tensor] | None = None
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

    def on_test_epoch_start(self) -> None:
        """Fetch this rank's share of the attack subset and check whether an OOD dataloader follows the test set."""
        self._adv_seen = 0
        self._warned_first_n = False
        self._with_ood = len(self.trainer.num_test_batches) > 1
        # One stream per rank: the ranks attack different images. CPU, so every device draws the same starts.
        self._pgd_generator = seeded_generator(global_seed(), "pgd", self.global_rank)
        self._adv_subset = self._attack_subset()

    def _attack_subset(self) -> Tensor | None:
        """This rank's part of the datamodule's evaluation subset, on this device; ``None`` if it has none."""
        if self.hparams.adv_samples == 0:
            return None
        evaluation_subset = getattr(self.trainer.datamodule, "evaluation_subset", None)
        if not callable(evaluation_subset):
            return None
        subset = evaluation_subset(self.hparams.adv_samples)
        # The test loaders shard strided and pad with repeats of the first images; each rank keeps the positions it
        # owns, so the ranks together attack every image of the subset exactly once.
        return rank_share(subset, self.global_rank, self.trainer.world_size).to(self.device)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Dataloader 0 (CIFAR-10 test): accuracy, loss, calibration, attacks; dataloader 1 (OOD): MSP scores.

        See the class docstring for the metrics and the batch layout. Every name is logged without Lightning's
        ``/dataloader_idx_N`` suffix.

        Raises:
            ValueError: If there are more than two test dataloaders.
        """
        if dataloader_idx == 1:
            x = batch[0]
            scores = msp_scores(self(x))
            self.test_ood_auroc.update(scores, torch.zeros_like(scores, dtype=torch.long))
            return
        if dataloader_idx != 0:
            raise ValueError(
                f"test_step expects at most two test dataloaders (CIFAR-10 test, OOD set), got dataloader_idx "
                f"{dataloader_idx}"
            )
        x, y = batch[0], batch[1]
        positions = batch[2] if len(batch) > 2 else None
        logits, loss = self._evaluate((x, y), "test", self.test_acc, add_dataloader_idx=False)
        probs = logits.float().softmax(dim=-1)
        self.test_ece.update(probs, y)
        self.log("test/ece", self.test_ece, add_dataloader_idx=False)
        self.log("test/nll", loss, sync_dist=True, add_dataloader_idx=False)
        if self._with_ood:
            scores = probs.amax(dim=-1)
            self.test_ood_auroc.update(scores, torch.ones_like(scores, dtype=torch.long))
        self._adversarial_accuracy(x, y, positions)

    def on_test_epoch_end(self) -> None:
        """Log ``test/ood_auroc`` when an OOD set was tested, and the attack accuracies (torchmetrics syncs ranks).

        The metric objects are logged here, on every rank, rather than in ``test_step``: computing a logged metric
        is a collective under DDP, and a rank that owns none of the attacked images would never log them from
        ``test_step``, leaving the other ranks' gathers unmatched (a hang, or wrong values from mismatched calls).
        A rank without attacked images contributes empty states.
        """
        if self.hparams.adv_samples > 0:
            self.log("test/adv_fgsm_acc", self.test_adv_fgsm_acc, add_dataloader_idx=False)
            self.log("test/adv_pgd_acc", self.test_adv_pgd_acc, add_dataloader_idx=False)
        if self._with_ood:
            # Logging the metric object: Lightning computes it once, synchronised across ranks, then resets it.
            self.log("test/ood_auroc", self.test_ood_auroc, add_dataloader_idx=False)
        else:
            self.test_ood_auroc.reset()

    def _adversarial_accuracy(self, x: Tensor, y: Tensor, positions: Tensor | None) -> None:
        """Attack the batch's images of the evaluation subset (or, without one, the stream's first images)."""
        hp = self.hparams
        if hp.adv_samples == 0:
            return
        if self._adv_subset is not None and positions is not None:
            # The one host sync per batch: the attacks need to know how many of its images are in the subset.
            index = self._adv_subset[positions].nonzero().squeeze(1)
            if index.numel() == 0:
                return
            x, y = x.index_select(0, index), y.index_select(0, index)
        else:
            if not self._warned_first_n:
                self._warned_first_n = True
                rank_zero_warn(
                    "ResNet18Classifier: the datamodule has no evaluation_subset() or its test batches carry no "
                    "positions, so test/adv_fgsm_acc and test/adv_pgd_acc attack the first adv_samples test images "
                    "of each rank's stream; that subset is not stratified (a class-ordered test set gives one class). "
                    "Use datamodules.CIFAR10DataModule, or give the datamodule an evaluation_subset(size) method "
                    "and test batches (images, labels, positions)."
                )
            world_size = self.trainer.world_size if attached_trainer(self) is not None else 1
            remaining = math.ceil(hp.adv_samples / world_size) - self._adv_seen
            if remaining <= 0:
                return
            x, y = x[:remaining], y[:remaining]
        self._adv_seen += len(y)
        if self._pixel_stats is None or self._pixel_stats[0].device != x.device:
            # Made once per device (building a tensor from Python numbers copies it to the device synchronously), and
            # outside inference mode: the attacks differentiate through the standardisation, and autograd refuses
            # inference tensors.
            with torch.inference_mode(False):
                self._pixel_stats = (
                    torch.tensor(CIFAR10_MEAN, device=x.device).view(1, 3, 1, 1),
                    torch.tensor(CIFAR10_STD, device=x.device).view(1, 3, 1, 1),
                )
        mean, std = self._pixel_stats

        def standardize(pixels: Tensor) -> Tensor:
            return (pixels - mean) / std

        pixels = (x.float() * std + mean).clamp_(0.0, 1.0)
        fgsm_images = fgsm(self, pixels, y, eps=hp.adv_eps, normalize=standardize)
        pgd_images = pgd(
            self,
            pixels,
            y,
            eps=hp.adv_eps,
            step_size=hp.pgd_step_size,
            steps=hp.pgd_steps,
            random_start=True,
            generator=self._pgd_generator,
            normalize=standardize,
        )
        self.test_adv_fgsm_acc.update(self(standardize(fgsm_images)), y)
        self.test_adv_pgd_acc.update(self(standardize(pgd_images)), y)
        # Logged in on_test_epoch_end, on every rank: see there.

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
