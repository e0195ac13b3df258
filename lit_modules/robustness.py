"""Calibration, out-of-distribution detection and adversarial accuracy, measured by a test-time callback.

:class:`RobustnessMetrics` reads the logits that :meth:`lit_modules.ResNet18Classifier.test_step` returns, so the
classifier stays a classifier (``test/acc``, ``test/loss``) and these measurements need no second forward pass
except the attacks' own. ``python cli.py test`` adds it by default (``--robustness.*``); in Python, pass it to the
``Trainer``: ``Trainer(callbacks=[RobustnessMetrics()])``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassCalibrationError
from typing_extensions import override

from datamodules.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from datamodules.subsets import rank_share
from lit_modules.metrics import CALIBRATION_BINS, fgsm, msp_scores, pgd
from pruning_callbacks.engine.checks import finite_number
from pruning_callbacks.engine.seeding import generator as seeded_generator
from pruning_callbacks.engine.seeding import global_seed

ATTACK_OPTIONS = ("adv_samples", "adv_eps", "pgd_steps", "pgd_step_size")
"""The attack settings, which ``ResNet18Classifier`` took before this callback existed (deprecated there)."""


def check_attack_options(adv_samples: object, adv_eps: object, pgd_steps: object, pgd_step_size: object) -> None:
    """Refuse attack settings outside their ranges, one line each.

    Raises:
        ValueError: Naming the option, the value and what is allowed.
    """
    if isinstance(adv_samples, bool) or not isinstance(adv_samples, int) or adv_samples < 0:
        raise ValueError(f"adv_samples must be an integer >= 0 (0 disables the attacks), got {adv_samples!r}")
    if not finite_number(adv_eps) or not 0 <= adv_eps <= 1:  # type: ignore[operator]
        raise ValueError(f"adv_eps must be in [0, 1] (pixel units, e.g. 0.0313725 for 8/255), got {adv_eps}")
    if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, int) or pgd_steps < 1:
        raise ValueError(f"pgd_steps must be a positive integer, got {pgd_steps!r}")
    if not finite_number(pgd_step_size) or not 0 < pgd_step_size <= 1:  # type: ignore[operator]
        raise ValueError(
            f"pgd_step_size must be in (0, 1] (pixel units, e.g. 0.0078431 for 2/255), got {pgd_step_size}"
        )


class RobustnessMetrics(Callback):
    """Test-time calibration, OOD detection and adversarial accuracy of a classifier whose ``test_step`` returns logits.

    With the CIFAR-10 test set as test dataloader 0 and an optional out-of-distribution set as dataloader 1
    (``CIFAR10DataModule(ood=...)``), it logs:

    * ``test/ece``: expected calibration error, 15 equal-width bins, l1 (Guo et al. 2017,
      https://arxiv.org/abs/1706.04599); ``test/nll``: mean negative log-likelihood (the value of ``test/loss``,
      under the name calibration studies use);
    * ``test/ood_auroc``: AUROC of the maximum softmax probability, CIFAR-10 test positive, OOD negative (Hendrycks &
      Gimpel 2017, https://arxiv.org/abs/1610.02136); only with a second test dataloader;
    * ``test/adv_fgsm_acc``, ``test/adv_pgd_acc``: accuracy under FGSM (Goodfellow et al. 2015,
      https://arxiv.org/abs/1412.6572) and L∞ PGD with a seeded random start (Madry et al. 2018,
      https://arxiv.org/abs/1706.06083) on ``adv_samples`` test images. With :class:`datamodules.CIFAR10DataModule`
      these are exactly the images of its :meth:`~datamodules.CIFAR10DataModule.evaluation_subset`
      (class-balanced to within one image per class, the same images for every run, seed, method and number of DDP
      ranks; all test images when ``adv_samples`` exceeds the test set). With a datamodule without
      ``evaluation_subset`` or test batches without positions, the first ``ceil(adv_samples / world_size)`` images
      of each rank's test stream are attacked instead, with a warning that this subset is not stratified. The
      attacks work in pixel space: they undo the CIFAR-10 standardisation (``CIFAR10_MEAN`` / ``CIFAR10_STD``),
      perturb within ``[0, 1]`` and standardise again.

    Every value is a torchmetrics state or an epoch mean, reduced across DDP ranks at the end of the test epoch and
    never read back to the host during it; every rank logs the epoch-end values, including a rank that attacked no
    image (its states are empty), so the collectives always match. (Picking a batch's images of the attack subset
    costs one host sync per test batch, nothing next to the attacks themselves.)

    Test batches of dataloader 0 are ``(images, labels)`` or ``(images, labels, positions)``, ``positions`` being
    each image's index in the test set (:class:`datamodules.cifar10.IndexedTestBatch`).

    Args:
        adv_samples: Number of test images attacked with FGSM and PGD; 0 disables both.
        adv_eps: L∞ radius of both attacks in pixel units (``8/255``, the usual CIFAR-10 budget).
        pgd_steps: Number of PGD steps.
        pgd_step_size: PGD step size in pixel units.

    Raises:
        ValueError: If an option is outside its allowed values; in ``setup``, for a module without ``num_classes``
            in its hyperparameters.
    """

    def __init__(
        self, adv_samples: int = 1000, adv_eps: float = 8 / 255, pgd_steps: int = 10, pgd_step_size: float = 2 / 255
    ) -> None:
        check_attack_options(adv_samples, adv_eps, pgd_steps, pgd_step_size)
        self.adv_samples = adv_samples
        self.adv_eps = float(adv_eps)
        self.pgd_steps = pgd_steps
        self.pgd_step_size = float(pgd_step_size)
        self._metrics: dict[str, Any] = {}
        self.attacked = 0
        """Images this rank attacked in the last test epoch."""
        self._subset: Tensor | None = None
        self._warned_first_n = False
        self._with_ood = False
        self._generator: torch.Generator | None = None
        self._pixel_stats: tuple[Tensor, Tensor] | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        num_classes = pl_module.hparams.get("num_classes")
        if num_classes is None:
            raise ValueError(f"RobustnessMetrics needs a module with num_classes in its hparams, got {pl_module!r}")
        self._metrics = {
            "ece": MulticlassCalibrationError(num_classes, n_bins=CALIBRATION_BINS, norm="l1", validate_args=False),
            "ood_auroc": BinaryAUROC(thresholds=None, validate_args=False),
            "adv_fgsm_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
            "adv_pgd_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
        }

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for metric in self._metrics.values():
            metric.to(pl_module.device).reset()
        self.attacked = 0
        self._warned_first_n = False
        self._with_ood = len(trainer.num_test_batches) > 1
        # One stream per rank: the ranks attack different images. CPU, so every device draws the same starts.
        self._generator = seeded_generator(global_seed(), "pgd", trainer.global_rank)
        self._subset = self._attack_subset(trainer, pl_module)

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, Tensor):
            raise ValueError(
                f"RobustnessMetrics needs test_step to return the batch's logits, got {type(outputs).__name__}"
            )
        # In the precision of test_step itself (autocast under 16-mixed / bf16-mixed): the NLL is then the loss's
        # value, and the attacks run the model as its test does.
        with trainer.precision_plugin.test_step_context():
            self._measure(trainer, pl_module, outputs, batch, dataloader_idx)

    def _measure(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Tensor, batch: Any, dataloader_idx: int
    ) -> None:
        if dataloader_idx == 1:
            scores = msp_scores(outputs)
            self._metrics["ood_auroc"].update(scores, torch.zeros_like(scores, dtype=torch.long))
            return
        x, y = batch[0], batch[1]
        positions = batch[2] if len(batch) > 2 else None
        probs = outputs.float().softmax(dim=-1)
        self._metrics["ece"].update(probs, y)
        loss = F.cross_entropy(outputs, y)
        pl_module.log("test/nll", loss, sync_dist=True, batch_size=len(y), add_dataloader_idx=False)
        if self._with_ood:
            scores = probs.amax(dim=-1)
            self._metrics["ood_auroc"].update(scores, torch.ones_like(scores, dtype=torch.long))
        self._attack(trainer, pl_module, x, y, positions)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the epoch-end values on every rank (computing them is a collective under DDP)."""
        names = ["ece"] + (["adv_fgsm_acc", "adv_pgd_acc"] if self.adv_samples > 0 else [])
        names += ["ood_auroc"] if self._with_ood else []
        for name in names:
            # compute() is synchronised across ranks already, so every rank holds the same value; "max" over ranks
            # keeps it exact (a mean of equal floats may round) and tells Lightning the value is synchronised.
            value = self._metrics[name].compute()
            pl_module.log(f"test/{name}", value, sync_dist=True, reduce_fx="max", add_dataloader_idx=False)
        for metric in self._metrics.values():
            metric.reset()

    def _attack_subset(self, trainer: Trainer, pl_module: LightningModule) -> Tensor | None:
        """This rank's part of the datamodule's evaluation subset, on this device; ``None`` if it has none."""
        if self.adv_samples == 0:
            return None
        evaluation_subset = getattr(trainer.datamodule, "evaluation_subset", None)
        if not callable(evaluation_subset):
            return None
        subset = evaluation_subset(self.adv_samples)
        # The test loaders shard strided and pad with repeats of the first images; each rank keeps the positions it
        # owns, so the ranks together attack every image of the subset exactly once.
        return rank_share(subset, trainer.global_rank, trainer.world_size).to(pl_module.device)

    def _attack(
        self, trainer: Trainer, pl_module: LightningModule, x: Tensor, y: Tensor, positions: Tensor | None
    ) -> None:
        """Attack the batch's images of the evaluation subset (or, without one, the stream's first images)."""
        if self.adv_samples == 0:
            return
        if self._subset is not None and positions is not None:
            # The one host sync per batch: the attacks need to know how many of its images are in the subset.
            index = self._subset[positions].nonzero().squeeze(1)
            if index.numel() == 0:
                return
            x, y = x.index_select(0, index), y.index_select(0, index)
        else:
            if not self._warned_first_n:
                self._warned_first_n = True
                rank_zero_warn(
                    "RobustnessMetrics: the datamodule has no evaluation_subset() or its test batches carry no "
                    "positions, so test/adv_fgsm_acc and test/adv_pgd_acc attack the first adv_samples test images "
                    "of each rank's stream; that subset is not stratified (a class-ordered test set gives one class). "
                    "Use datamodules.CIFAR10DataModule, or give the datamodule an evaluation_subset(size) method "
                    "and test batches (images, labels, positions)."
                )
            remaining = math.ceil(self.adv_samples / trainer.world_size) - self.attacked
            if remaining <= 0:
                return
            x, y = x[:remaining], y[:remaining]
        self.attacked += len(y)
        mean, std = self._standardisation(x.device)

        def standardize(pixels: Tensor) -> Tensor:
            return (pixels - mean) / std

        pixels = (x.float() * std + mean).clamp_(0.0, 1.0)
        fgsm_images = fgsm(pl_module, pixels, y, eps=self.adv_eps, normalize=standardize)
        pgd_images = pgd(
            pl_module,
            pixels,
            y,
            eps=self.adv_eps,
            step_size=self.pgd_step_size,
            steps=self.pgd_steps,
            random_start=True,
            generator=self._generator,
            normalize=standardize,
        )
        self._metrics["adv_fgsm_acc"].update(pl_module(standardize(fgsm_images)), y)
        self._metrics["adv_pgd_acc"].update(pl_module(standardize(pgd_images)), y)

    def _standardisation(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The CIFAR-10 mean and std as ``(1, 3, 1, 1)`` tensors on ``device``, made once per device."""
        if self._pixel_stats is None or self._pixel_stats[0].device != device:
            # Building a tensor from Python numbers copies it to the device synchronously, hence once; and outside
            # inference mode: the attacks differentiate through the standardisation, and autograd refuses
            # inference tensors.
            with torch.inference_mode(False):
                self._pixel_stats = (
                    torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1),
                    torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1),
                )
        return self._pixel_stats
