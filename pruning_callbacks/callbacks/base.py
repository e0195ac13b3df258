"""The base callback that every pruning method extends."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from pruning_callbacks.engine.apply import MaskApplier
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.seeding import global_seed

STATE_VERSION = 1


class MaskedTraining(Callback):
    """Holds the masks of a pruning method and keeps them exact through training.

    What every method shares lives here:

    * the prunable set, resolved once in ``setup`` from ``include`` / ``exclude`` patterns;
    * the masks, applied in place after every optimizer step (weights and optimizer state) by a
      :class:`~pruning_callbacks.engine.apply.MaskApplier`, which works the same under ``32``, ``16-mixed`` and
      ``bf16-mixed`` precision because the parameters themselves stay in full precision;
    * DDP agreement: masks computed by a method are broadcast from rank 0, so every rank holds the same masks;
    * logging: ``sparsity/global`` and ``sparsity/<layer>`` whenever the masks change, a per-layer sparsity chart
      to TensorBoard, and ``sparsity/global`` (in the progress bar) at the start of every training epoch;
    * resume: the masks and counters are in :meth:`state_dict`; on ``--ckpt_path last`` they are restored instead
      of being computed again.

    A method subclasses this and overrides :meth:`initial_masks` (masks before the first step) and/or calls
    :meth:`set_masks` from its own hooks.

    Args:
        include: Glob patterns of prunable weights (full parameter names or module names); ``None`` means the
            weight of every Conv and Linear layer.
        exclude: Glob patterns of weights to keep dense, e.g. ``[conv1, linear]``.
        seed: Seed of every random choice this callback makes; ``None`` means the seed given to
            ``seed_everything`` (``PL_GLOBAL_SEED``), or 0.
        log_chart: Send a per-layer sparsity bar chart to TensorBoard whenever the masks change.
    """

    def __init__(
        self,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
    ) -> None:
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self._seed = seed
        self.log_chart = log_chart
        self.masks: Masks | None = None
        self.mask_updates = 0
        self._params: dict[str, nn.Parameter] = {}
        self._applier: MaskApplier | None = None
        self._handles: list[RemovableHandle] = []

    @property
    def seed(self) -> int:
        """The seed of this callback's random choices."""
        return self._seed if self._seed is not None else global_seed()

    @property
    def parameters(self) -> dict[str, nn.Parameter]:
        """The prunable parameters by full name (resolved in ``setup``)."""
        return self._params

    # ------------------------------------------------------------------ methods override these
    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks | None:
        """Return the masks to train with from the first step, or ``None`` to start dense.

        Called once per run in ``on_fit_start``, on the training device, and not on resume.
        """
        return None

    def training_flops_per_sample(self, sparse_forward: float, dense_forward: float, step: int) -> float:
        """Return the training FLOPs of one sample at optimizer step ``step``, for run summaries.

        The accounting of Evci et al. 2020 (RigL, https://arxiv.org/abs/1911.11134, appendix H): a training step
        costs three forward passes (the backward pass two) at the current density. Methods that also need dense
        computation (RigL's dense gradients) override this.

        Args:
            sparse_forward: Forward FLOPs of one sample at the current masks.
            dense_forward: Forward FLOPs of one sample of the dense model.
            step: The optimizer step (``trainer.global_step``).
        """
        return 3.0 * sparse_forward

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._params = prunable_parameters(pl_module, self.include, self.exclude)
        if self._seed is None:
            self._seed = global_seed()

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.masks is not None:
            rank_zero_info(f"{type(self).__name__}: resuming with restored masks ({self.masks!r})")
            self._activate(trainer)
            return
        masks = self.initial_masks(trainer, pl_module)
        if masks is not None:
            self.set_masks(trainer, pl_module, masks)
        else:
            self._attach(trainer)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # At the start, after a method's own epoch-start changes (subclasses call this last), so that the progress
        # bar shows the sparsity the epoch trains at, not the previous epoch's.
        if self.masks is not None:
            pl_module.log("sparsity/global", self.masks.sparsity(), prog_bar=True)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._detach()

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "masks": self.masks.state_dict() if self.masks is not None else None,
            "mask_updates": self.mask_updates,
            "seed": self.seed,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        masks = state_dict.get("masks")
        if masks is not None:
            restored = Masks.from_state_dict(masks)
            if self._params:
                try:
                    restored.check_compatible({name: p.shape for name, p in self._params.items()})
                except ValueError as error:
                    message = f"{type(self).__name__}: the checkpoint's masks do not fit the model: {error}"
                    raise ValueError(message) from None
            self.masks = restored
        self.mask_updates = int(state_dict.get("mask_updates", 0))
        saved_seed = state_dict.get("seed")
        if saved_seed is not None:
            if self._seed is not None and int(saved_seed) != self._seed:
                rank_zero_warn(
                    f"{type(self).__name__}: seed {self._seed} differs from the checkpoint's seed {saved_seed}; "
                    "using the checkpoint's so that the resumed run matches the interrupted one."
                )
            self._seed = int(saved_seed)

    # ------------------------------------------------------------------ for subclasses
    def set_masks(self, trainer: Trainer, pl_module: LightningModule, masks: Masks, *, log: bool = True) -> None:
        """Make ``masks`` the current masks.

        The masks are agreed across ranks, the pruned weights and their optimizer state are zeroed, and the new
        sparsity is logged.

        Args:
            trainer: The trainer.
            pl_module: The module being trained.
            masks: The new masks, keyed like :attr:`parameters`.
            log: Log the sparsity scalars and chart. Methods that keep per-layer densities constant while moving
                connections (RigL, SET) log once and then pass ``False``.
        """
        if trainer.world_size > 1:
            # Data-dependent scores can differ across ranks in the last bits; rank 0's masks are the masks.
            state = trainer.strategy.broadcast(masks.state_dict(), src=0)
            masks = Masks.from_state_dict(state)
        self.masks = masks  # _activate moves them to the parameters' device
        self.mask_updates += 1
        self._activate(trainer)
        if log:
            self._log_masks(trainer)

    def restart_optimization(self, trainer: Trainer, lr: float | None = None, start_epoch: int = 0) -> None:
        """Give training a new optimizer (no momentum) and restart its learning-rate schedule at ``start_epoch``.

        Used at a round boundary (rewinding, fine-tuning) and when a ticket is pruned and retrained. The masks'
        step hooks move to the new optimizer.

        Args:
            trainer: The trainer, inside ``fit``.
            lr: A new base learning rate for every parameter group; ``None`` keeps the model's.
            start_epoch: Epochs to fast-forward each per-epoch schedule by (the rewind point, or the epoch a
                retraining continues the original schedule from).
        """
        trainer.strategy.setup_optimizers(trainer)
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if lr is not None:
                scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
                for group in scheduler.optimizer.param_groups:
                    group["lr"] = group["initial_lr"] = lr
            if start_epoch and config.interval == "epoch":
                with warnings.catch_warnings():
                    # Stepping a scheduler before its optimizer is what fast-forwarding means here.
                    warnings.simplefilter("ignore", UserWarning)
                    for _ in range(start_epoch):
                        scheduler.step()
        self._attach(trainer)

    def _activate(self, trainer: Trainer) -> None:
        assert self.masks is not None
        self.masks = self.masks.to(next(iter(self._params.values())).device)
        self._applier = MaskApplier(self._params, self.masks)
        self._applier.apply_()
        for optimizer in trainer.optimizers:
            self._applier.mask_optimizer_state_(optimizer)
        self._attach(trainer)

    def _attach(self, trainer: Trainer) -> None:
        """(Re-)attach the step hooks to the trainer's current optimizers, e.g. after a method replaced them."""
        self._detach()
        if self._applier is not None:
            self._handles = [self._applier.attach(optimizer) for optimizer in trainer.optimizers]

    def _detach(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _log_masks(self, trainer: Trainer) -> None:
        assert self.masks is not None
        layer_sparsity = self.masks.layer_sparsity()
        metrics = {
            "sparsity/global": self.masks.sparsity(),
            "sparsity/remaining_weights": float(self.masks.remaining()),
        }
        metrics.update({f"sparsity/{name}": value for name, value in layer_sparsity.items()})
        rank_zero_info(
            f"{type(self).__name__}: masks updated (#{self.mask_updates}): global sparsity "
            f"{self.masks.sparsity():.4f}, {self.masks.remaining():,} of {self.masks.total:,} weights remain"
        )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                if self.log_chart and isinstance(logger, TensorBoardLogger):
                    from pruning_callbacks.callbacks.plotting import masks_figure  # matplotlib only when drawing

                    logger.experiment.add_figure("sparsity/per_layer", masks_figure(self.masks), trainer.global_step)
