"""Prune once at initialization, then train with the mask fixed."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.callbacks.batches import mean_over_ranks, training_batches
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.recipes import MaskRecipe
from pruning_callbacks.engine.scores import GRASP_TEMPERATURE


class PruneAtInit(MaskedTraining):
    """Compute a mask from a registered score before the first training step and keep it for the whole run.

    The methods, all through the same engine (:class:`~pruning_callbacks.engine.recipes.MaskRecipe`):

    * ``score: synflow`` (global): SynFlow, Tanaka et al. 2020, "Pruning neural networks without any data by
      iteratively conserving synaptic flow" (https://arxiv.org/abs/2006.05467), data-free, 100 iterations by default;
    * ``score: snip``: SNIP, Lee et al. 2019 (https://arxiv.org/abs/1810.02340), on ``num_batches`` training batches;
    * ``score: grasp``: GraSP, Wang et al. 2020 (https://arxiv.org/abs/2002.07376), temperature 200;
    * ``score: random`` with a layer-wise ``distribution`` (``uniform``, ``uniform_plus``, ``er``, ``erk``,
      ``erk_plus``) or with ``ratio_from: snip|grasp|synflow`` (that method's per-layer counts, positions drawn again
      at random): the static random sparse training of Liu et al. 2022, "The Unreasonable Effectiveness of Random
      Pruning" (https://arxiv.org/abs/2202.02643);
    * ``score: magnitude``: the magnitude-at-initialization baseline of Frankle et al. 2021, "Pruning Neural Networks
      at Initialization: Why Are We Missing the Mark?" (https://arxiv.org/abs/2009.08576).

    Any score added to :data:`pruning_callbacks.engine.scores.SCORES` works here by name.

    The mask is computed once, on the training device, in ``on_fit_start``, from the first ``num_batches`` training
    batches of this rank when the score needs data (transformed exactly as training transforms them); under DDP the
    gradients behind the scores are averaged over ranks and rank 0's mask is broadcast. Scoring leaves the model's
    weights, buffers, gradients, train/eval modes and the global random state as they were. A resumed run restores
    the mask from the checkpoint instead of computing it again.

    Args:
        target_sparsity: Fraction of the prunable weights to remove, in ``[0, 1)``. Ignored (may be ``None``)
            with ``distribution: custom``.
        score: Name of a registered score (``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``, ...).
        scope: ``global`` (one ranking over all layers) or ``layerwise`` (per-layer counts from ``distribution`` or
            ``ratio_from``). ``synflow`` needs ``global``.
        distribution: Layer-wise density distribution for ``scope: layerwise``: ``uniform``, ``uniform_plus``,
            ``er``, ``erk``, ``erk_plus`` or ``custom``.
        layer_sparsity: For ``distribution: custom``: glob pattern of layer name to that layer's sparsity.
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.
        ratio_from: ``snip``, ``grasp``, ``synflow`` (any registered score): take the per-layer counts of that
            method's global mask and choose the positions in each layer with ``score`` (``random``). Needs
            ``scope: layerwise`` and no ``distribution``.
        iterations: Rounds of the exponential schedule ``d^(k/n)`` of the global ranking; ``None`` means 100 for
            ``synflow`` and 1 otherwise.
        num_batches: Training batches per rank that ``snip`` and ``grasp`` score on.
        temperature: GraSP's softmax temperature.
        input_shape: Shape of one input for ``synflow``, e.g. ``[3, 32, 32]``; ``None`` takes it from the module's
            ``example_input_array`` or from one training batch (only its shape is used).
        min_weights_per_layer: In a global ranking, every layer keeps at least this many weights, so no layer is
            emptied; 0 allows emptying layers.
        bn_mode: The mode ``snip`` and ``grasp`` score the model in (``eval``: BatchNorm with its running
            statistics; ``train``: with the batch's). ``None`` follows each method's reference code: ``eval`` for
            SNIP (the Synaptic-Flow code), ``train`` for GraSP (the authors' code). The ``ratio_from`` baselines
            inherit it.

    Raises:
        ValueError: For a sparsity outside ``[0, 1)``; an unknown score, ``ratio_from``, scope or distribution; a
            distribution given with ``scope: global``; ``synflow`` with ``scope: layerwise``; ``ratio_from`` with
            ``scope: global`` or a distribution; ``iterations`` above 1 without a global ranking; or a count,
            temperature or shape out of range.
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
        ratio_from: str | None = None,
        iterations: int | None = None,
        num_batches: int = 1,
        temperature: float = GRASP_TEMPERATURE,
        input_shape: Sequence[int] | None = None,
        min_weights_per_layer: int = 1,
        bn_mode: str | None = None,
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        self.recipe = MaskRecipe(
            target_sparsity=target_sparsity,
            score=score,
            scope=scope,
            distribution=distribution,
            layer_sparsity=layer_sparsity,
            ratio_from=ratio_from,
            iterations=iterations,
            min_weights_per_layer=min_weights_per_layer,
            num_batches=num_batches,
            temperature=temperature,
            input_shape=tuple(input_shape) if input_shape is not None else None,
            bn_mode=bn_mode,
        )
        self.target_sparsity = target_sparsity
        self.score = score
        self.scope = scope
        self.distribution = distribution
        self.layer_sparsity = self.recipe.layer_sparsity
        self.ratio_from = ratio_from

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.recipe.check_feasible({name: param.numel() for name, param in self.parameters.items()})

    @override
    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        start = time.perf_counter()
        device = next(iter(self.parameters.values())).device
        # Scoring draws no random numbers of its own (random scores use their own generator); forking keeps e.g.
        # dropout in a scored forward pass from shifting the run's random stream.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            batches = None
            shape_from_batch = self.recipe.needs_input_shape and getattr(pl_module, "example_input_array", None) is None
            if self.recipe.needs_batches or shape_from_batch:
                batches = training_batches(trainer, self.recipe.num_batches if self.recipe.needs_batches else 1)
            masks = self.recipe.masks(
                self.parameters,
                seed=self.seed,
                module=pl_module,
                batches=batches,
                reduce_mean=mean_over_ranks(trainer),
            )
        rank_zero_info(
            f"{type(self).__name__}: {self.recipe.describe()} mask at sparsity {masks.sparsity():.4f} computed in "
            f"{time.perf_counter() - start:.2f}s"
        )
        return masks
