"""The "Static" baseline of RigL: a random sparse mask at a layer-wise budget, kept for the whole run.

:class:`~pruning_callbacks.callbacks.dynamic.SET` and :class:`~pruning_callbacks.callbacks.dynamic.RigL` start from
the same mask (for the same seed) and move it; this callback does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.engine.checks import check_choice
from pruning_callbacks.engine.distributions import check_target_sparsity
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.recipes import SPARSE_DISTRIBUTIONS, random_sparse_masks
from pruning_callbacks.engine.seeding import derive_seed


class StaticSparse(MaskedTraining):
    """Train a random sparse network whose mask never changes: the "Static" baseline of RigL.

    The mask is the one :class:`SET` and :class:`RigL` start from for the same seed, so the three methods differ only
    in whether and how the topology moves. From Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners"
    (https://arxiv.org/abs/1911.11134), Section 4 ("Static").

    Args:
        target_sparsity: Fraction of the prunable weights removed, in ``[0, 1)``; reached exactly.
        distribution: Layer-wise densities: ``uniform``, ``er`` or ``erk`` (Erdős-Rényi-Kernel, the default).
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.

    Raises:
        ValueError: If ``target_sparsity`` is outside ``[0, 1)`` or ``distribution`` is not one of the three.
    """

    def __init__(
        self,
        target_sparsity: float,
        distribution: str = "erk",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        self.target_sparsity = check_target_sparsity(target_sparsity)
        self.distribution = check_choice("distribution", distribution, SPARSE_DISTRIBUTIONS)

    @override
    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        # One seed key for every sparse-from-scratch method, so Static, SET and RigL start from the same mask.
        seed = derive_seed(self.seed, "sparse_from_scratch", "init")
        return random_sparse_masks(self.parameters, self.target_sparsity, self.distribution, seed)
