"""Prune once at initialization, then train with the mask fixed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from pruning_callbacks.base import MaskedTraining
from pruning_callbacks.masks import Masks
from pruning_callbacks.scores import ScoreContext, compute_scores, get_score
from pruning_callbacks.seeding import derive_seed
from pruning_callbacks.selection import check_pruning_request, prune_to_sparsity


class PruneAtInit(MaskedTraining):
    """Compute a mask from a registered score before the first training step and keep it for the whole run.

    With ``score: random`` and a layer-wise ``distribution`` this is the static random sparse training of
    Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning" (https://arxiv.org/abs/2202.02643); with
    ``score: magnitude`` it is the magnitude-at-initialization baseline of Frankle et al. 2021, "Pruning Neural
    Networks at Initialization: Why Are We Missing the Mark?" (https://arxiv.org/abs/2009.08576). Any score added
    to :data:`pruning_callbacks.scores.SCORES` works here by name.

    The mask is computed once, on the training device, in ``on_fit_start``; a resumed run restores it from the
    checkpoint instead of computing it again.

    Args:
        target_sparsity: Fraction of the prunable weights to remove, in ``[0, 1)``. Ignored (may be ``None``)
            with ``distribution: custom``.
        score: Name of a registered score (``magnitude``, ``random``, ...).
        scope: ``global`` (one ranking over all layers) or ``layerwise`` (per-layer counts from ``distribution``).
        distribution: Layer-wise density distribution for ``scope: layerwise``: ``uniform``, ``uniform_plus``,
            ``er``, ``erk``, ``erk_plus`` or ``custom``.
        layer_sparsity: For ``distribution: custom``: glob pattern of layer name to that layer's sparsity.
        include: See :class:`~pruning_callbacks.base.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.base.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.base.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.base.MaskedTraining`.

    Raises:
        ValueError: For a sparsity outside ``[0, 1)``, an unknown score, scope or distribution, or a distribution
            given with ``scope: global``.
    """

    def __init__(
        self,
        target_sparsity: float | None = None,
        score: str = "magnitude",
        scope: str = "layerwise",
        distribution: str = "uniform",
        layer_sparsity: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        get_score(score)
        check_pruning_request(target_sparsity, scope, distribution, layer_sparsity)
        self.target_sparsity = target_sparsity
        self.score = score
        self.scope = scope
        self.distribution = distribution
        self.layer_sparsity = dict(layer_sparsity) if layer_sparsity else None

    @override
    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        dense = Masks.dense(self.parameters)
        context = ScoreContext(
            params=self.parameters,
            masks=dense,
            seed=derive_seed(self.seed, "prune_at_init", self.score),
            module=pl_module,
        )
        scores = compute_scores(self.score, context)
        return prune_to_sparsity(
            scores,
            dense,
            self.target_sparsity if self.target_sparsity is not None else 0.0,
            scope=self.scope,
            distribution=self.distribution,
            layer_sparsity=self.layer_sparsity,
        )
