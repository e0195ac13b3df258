"""Training signals of a sparse network, logged at Lightning's logging cadence."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.engine.flow import effective_grad_norm
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.lightning_compat import should_log_this_step


class GradientNormMonitor(Callback):
    """Log ``train/grad_norm``, the L2 norm of the gradients of the weights the masks keep.

    The gradient flow through the remaining connections is how Wang et al. 2020 ("Picking Winning Tickets Before
    Training by Preserving Gradient Flow", https://arxiv.org/abs/2002.07376) and Evci et al. 2022 ("Gradient Flow in
    Sparse Neural Networks and How Lottery Tickets Win", https://arxiv.org/abs/2010.03533) compare sparse networks.
    It is computed by :func:`~pruning_callbacks.engine.flow.effective_grad_norm` over the prunable weights
    (:func:`~pruning_callbacks.engine.parameters.prunable_parameters`), with the masks of the trainer's
    :class:`~pruning_callbacks.MaskedTraining` callback once it has some; weights it does not mask, and every
    weight when there is no such callback, count as dense.

    It runs in ``on_before_optimizer_step``, where the gradients are final: accumulated, all-reduced under DDP and
    unscaled under ``16-mixed``. Only on the steps Lightning sends to the loggers (every
    ``trainer.log_every_n_steps``), so the other steps pay nothing, and even then without a host sync.

    Args:
        include: Glob patterns restricting the monitored weights (as in :func:`prunable_parameters`); ``None``
            monitors every convolution and linear weight.
        exclude: Glob patterns of weights left out.
    """

    def __init__(self, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> None:
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self._params: dict[str, nn.Parameter] = {}

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._params = prunable_parameters(pl_module, self.include, self.exclude)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        # The decision Lightning itself takes for `self.log(on_step=True)` values at this step.
        if should_log_this_step(trainer):
            self._log_grad_norm(trainer, pl_module)

    def _log_grad_norm(self, trainer: Trainer, pl_module: LightningModule) -> None:
        masks = self._current_masks(trainer)
        if masks is not None:
            masks = {name: mask for name, mask in masks.items() if name in self._params}
        norm = effective_grad_norm(self._params, masks)
        pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    @staticmethod
    def _current_masks(trainer: Trainer) -> Masks | None:
        """The masks of the first :class:`MaskedTraining` callback that has any (looked up each time: they change)."""
        for callback in trainer.callbacks:
            if isinstance(callback, MaskedTraining) and callback.masks is not None:
                return callback.masks
        return None
