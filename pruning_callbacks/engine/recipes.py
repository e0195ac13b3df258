"""Masks from a score at initialization: the pipeline shared by ``PruneAtInit`` and ``EarlyBird``.

A :class:`MaskRecipe` is plain, validated data (what a config says); :meth:`MaskRecipe.masks` turns it into masks with
the engine: scores (:mod:`~pruning_callbacks.engine.scores`) -> exact selection
(:mod:`~pruning_callbacks.engine.selection`),

* in ``global`` scope, in ``iterations`` rounds of the exponential schedule ``d_k = d^(k/n)`` of SynFlow (Tanaka et
  al. 2020, https://arxiv.org/abs/2006.05467), each an exact global top-k that never empties a layer
  (:func:`select_global_with_floor`);
* in ``layerwise`` scope, with per-layer counts from a density distribution (uniform, ERK, ...);
* with ``ratio_from``, with the per-layer counts of another method's global mask and positions chosen again by
  ``score`` (random positions: the "SNIP ratio" and "GraSP ratio" of Liu et al. 2022,
  https://arxiv.org/abs/2202.02643).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from pruning_callbacks.engine.checks import check_int
from pruning_callbacks.engine.distributions import check_target_sparsity
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import (
    BN_MODES,
    GRASP_TEMPERATURE,
    SCORES,
    ScoreContext,
    compute_scores,
    get_score,
    needs_batches,
)
from pruning_callbacks.engine.seeding import derive_seed
from pruning_callbacks.engine.selection import (
    check_pruning_request,
    prune_to_sparsity,
    select_global_with_floor,
    select_layerwise,
)

SYNFLOW_ITERATIONS = 100
"""SynFlow's number of pruning iterations (Tanaka et al. 2020, section 7)."""

GLOBAL_ONLY_SCORES = ("synflow",)
"""Scores whose definition is a ranking over all layers jointly."""

ReduceFn = Callable[[Sequence[Tensor]], list[Tensor]]


def exponential_keep_counts(total: int, target_sparsity: float, iterations: int) -> list[int]:
    """Weights to keep after each of ``iterations`` rounds of the exponential schedule.

    Round ``k`` of ``n`` keeps ``round(total * d^(k/n))`` weights, ``d = 1 - target_sparsity`` (Tanaka et al. 2020,
    https://arxiv.org/abs/2006.05467): an absolute target over all weights, not a fraction of what remains, so the
    last round lands exactly on ``round(d * total)``, the count
    :func:`~pruning_callbacks.engine.selection.prune_to_sparsity` keeps, for any ``n``. The counts never increase.

    Args:
        total: Number of prunable weights.
        target_sparsity: Final sparsity, in ``[0, 1)``.
        iterations: Number of rounds, at least 1.

    Raises:
        ValueError: If ``target_sparsity`` or ``iterations`` is out of range.
    """
    density = 1.0 - check_target_sparsity(target_sparsity)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}.")
    final = round(density * total)
    counts = [max(final, min(total, round(total * density ** (k / iterations)))) for k in range(1, iterations)]
    return [*counts, final]


def iterative_global_prune(
    scores_for: Callable[[Masks, int], Mapping[str, Tensor]],
    masks: Masks,
    target_sparsity: float,
    iterations: int,
    min_weights_per_layer: int = 1,
) -> Masks:
    """Prune to ``target_sparsity`` in ``iterations`` global rounds, scoring the masked network again each round.

    Round ``k`` keeps :func:`exponential_keep_counts` ``[k-1]`` weights; with one iteration this is one-shot global
    pruning. Masks only shrink, and the last round reaches the target exactly.

    Args:
        scores_for: ``(current masks, round index from 1) -> scores``.
        masks: The masks to start from (usually dense).
        target_sparsity: Final global sparsity over all weights the masks cover, in ``[0, 1)``.
        iterations: Number of rounds, at least 1.
        min_weights_per_layer: See :func:`select_global_with_floor`.

    Raises:
        ValueError: On an out-of-range argument, or if the masks are already sparser than the target.
    """
    for iteration, keep in enumerate(exponential_keep_counts(masks.total, target_sparsity, iterations), start=1):
        remaining = masks.remaining()
        if keep >= remaining and iteration < iterations:
            continue  # nothing to prune this round (small networks, early rounds)
        masks = select_global_with_floor(scores_for(masks, iteration), masks, keep, min_weights_per_layer)
    return masks


def _known_scores() -> str:
    return ", ".join(sorted(SCORES))


@dataclass(frozen=True)
class MaskRecipe:
    """How to compute a mask from a score: validated config data, with :meth:`masks` to run it.

    Args:
        target_sparsity: Fraction of the prunable weights to remove, in ``[0, 1)``; may be ``None`` only with
            ``distribution: custom``.
        score: A registered score (``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``, ...). With
            ``ratio_from`` it only chooses the positions within each layer.
        scope: ``global`` (one ranking over all layers) or ``layerwise`` (per-layer counts from ``distribution``
            or ``ratio_from``).
        distribution: Layer-wise densities for ``scope: layerwise``: ``uniform``, ``uniform_plus``, ``er``,
            ``erk``, ``erk_plus`` or ``custom``.
        layer_sparsity: For ``distribution: custom``: layer pattern -> sparsity.
        ratio_from: A registered score whose global mask gives the per-layer counts (``snip``, ``grasp``,
            ``synflow``); ``score`` then picks the positions in each layer (``random`` for Liu et al. 2022's
            "SNIP ratio" and "GraSP ratio"). Needs ``scope: layerwise`` and no ``distribution``.
        iterations: Rounds of the exponential schedule for the global ranking (``score`` in ``global`` scope, or
            ``ratio_from``); ``None`` means 100 for ``synflow`` and 1 (one shot) otherwise.
        min_weights_per_layer: In a global ranking, every layer keeps at least this many weights; 0 allows a layer
            to be emptied.
        num_batches: Training batches a data-dependent score (``snip``, ``grasp``) reads, per DDP rank.
        temperature: GraSP's softmax temperature.
        input_shape: Shape of one input for ``synflow`` (e.g. ``[3, 32, 32]``); ``None`` takes it from a batch or
            the module's ``example_input_array``.
        bn_mode: The mode ``snip`` and ``grasp`` score the model in: ``eval`` (BatchNorm with running statistics)
            or ``train`` (batch statistics); ``None`` means each score's reference default, ``eval`` for SNIP and
            ``train`` for GraSP (:data:`~pruning_callbacks.engine.scores.DEFAULT_BN_MODES`).

    Raises:
        ValueError: On an unknown score or ``ratio_from``, an invalid sparsity, scope or distribution, ``synflow``
            with ``scope: layerwise``, ``ratio_from`` with ``scope: global`` or with a distribution, ``iterations``
            above 1 without a global ranking, or a count or temperature out of range.
    """

    target_sparsity: float | None
    score: str = "magnitude"
    scope: str = "layerwise"
    distribution: str = "uniform"
    layer_sparsity: Mapping[str, float] | None = None
    ratio_from: str | None = None
    iterations: int | None = None
    min_weights_per_layer: int = 1
    num_batches: int = 1
    temperature: float = GRASP_TEMPERATURE
    input_shape: tuple[int, ...] | None = None
    bn_mode: str | None = None

    def __post_init__(self) -> None:
        get_score(self.score)
        if self.ratio_from is not None:
            if self.ratio_from not in SCORES:
                raise ValueError(f"unknown ratio_from '{self.ratio_from}'; known scores: {_known_scores()}")
            if self.scope != "layerwise":
                raise ValueError(
                    f"ratio_from sets per-layer counts, so it needs scope 'layerwise', got scope '{self.scope}'."
                )
            if self.distribution != "uniform" or self.layer_sparsity is not None:
                raise ValueError(
                    f"ratio_from '{self.ratio_from}' replaces the distribution; leave distribution unset, "
                    f"got '{self.distribution}'."
                )
        check_pruning_request(self.target_sparsity, self.scope, self.distribution, self.layer_sparsity)
        if self.score in GLOBAL_ONLY_SCORES and self.scope != "global":
            raise ValueError(
                f"score '{self.score}' ranks all layers jointly (Tanaka et al. 2020), so it needs scope 'global', got "
                f"'{self.scope}'; for its per-layer counts with random positions use score: random, "
                f"ratio_from: {self.score}."
            )
        check_int("iterations", self.iterations, 1, allow_none=True)
        if self.iterations is not None and self.iterations > 1 and not self.global_ranking:
            raise ValueError(
                f"iterations > 1 needs a global ranking (scope 'global' or ratio_from), got iterations "
                f"{self.iterations} with scope '{self.scope}' and distribution '{self.distribution}'."
            )
        check_int("min_weights_per_layer", self.min_weights_per_layer, 0)
        check_int("num_batches", self.num_batches, 1)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}.")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}.")
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if not shape or any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in shape):
                raise ValueError(f"input_shape must be a list of positive integers such as [3, 32, 32], got {shape}.")
            object.__setattr__(self, "input_shape", shape)
        if self.bn_mode is not None and self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)} or null, got {self.bn_mode!r}.")
        if self.layer_sparsity is not None:
            object.__setattr__(self, "layer_sparsity", dict(self.layer_sparsity))

    # ------------------------------------------------------------------ what the recipe implies
    @property
    def global_ranking(self) -> bool:
        """Whether a global ranking decides the per-layer counts (``scope: global`` or ``ratio_from``)."""
        return self.scope == "global" or self.ratio_from is not None

    @property
    def ranking_score(self) -> str:
        """The score of the global ranking: ``ratio_from`` if set, else ``score``."""
        return self.ratio_from if self.ratio_from is not None else self.score

    @property
    def rounds(self) -> int:
        """Rounds of the exponential schedule: ``iterations``, else 100 for SynFlow and 1 otherwise."""
        if not self.global_ranking:
            return 1
        if self.iterations is not None:
            return self.iterations
        return SYNFLOW_ITERATIONS if self.ranking_score == "synflow" else 1

    @property
    def scores_used(self) -> tuple[str, ...]:
        """The scores this recipe computes, in order."""
        return (self.score,) if self.ratio_from is None else (self.ratio_from, self.score)

    @property
    def needs_batches(self) -> bool:
        """Whether a score of this recipe reads training batches."""
        return any(needs_batches(name) for name in self.scores_used)

    @property
    def needs_input_shape(self) -> bool:
        """Whether SynFlow runs without an ``input_shape`` (it then takes one from a batch or the module)."""
        return "synflow" in self.scores_used and self.input_shape is None

    @property
    def options(self) -> dict[str, Any]:
        """The method options passed to the scores in ``ScoreContext.options``."""
        options: dict[str, Any] = {"temperature": float(self.temperature)}
        if self.input_shape is not None:
            options["input_shape"] = self.input_shape
        if self.bn_mode is not None:
            options["bn_mode"] = self.bn_mode
        return options

    def describe(self) -> str:
        """A short human-readable name, e.g. ``synflow (global, 100 iterations)`` or ``random (snip ratios)``."""
        if self.ratio_from is not None:
            return f"{self.score} ({self.ratio_from} ratios)"
        if self.scope == "global":
            rounds = self.rounds
            return f"{self.score} (global, {rounds} iteration{'s' if rounds > 1 else ''})"
        return f"{self.score} (layerwise, {self.distribution})"

    def check_feasible(self, numels: Mapping[str, int]) -> None:
        """Check that a global ranking can keep ``min_weights_per_layer`` in every layer at the target.

        Args:
            numels: Prunable parameter name to number of weights.

        Raises:
            ValueError: Naming the largest feasible sparsity and how to allow emptying layers.
        """
        if not self.global_ranking or self.min_weights_per_layer == 0 or self.target_sparsity is None:
            return
        total = sum(numels.values())
        keep = round((1.0 - self.target_sparsity) * total)
        needed = sum(min(self.min_weights_per_layer, numel) for numel in numels.values())
        if keep < needed:
            raise ValueError(
                f"target_sparsity {self.target_sparsity} keeps {keep} of {total} weights, fewer than the {needed} "
                f"that min_weights_per_layer {self.min_weights_per_layer} reserves over {len(numels)} layers; the "
                f"largest feasible sparsity is {1 - needed / total:.6g}, or set min_weights_per_layer: 0."
            )

    # ------------------------------------------------------------------ running it
    def masks(
        self,
        params: Mapping[str, Tensor],
        *,
        seed: int,
        key: str = "prune_at_init",
        module: nn.Module | None = None,
        batches: Sequence[tuple[Tensor, Tensor]] | None = None,
        reduce_mean: ReduceFn | None = None,
    ) -> Masks:
        """Compute the masks this recipe describes, from dense masks over ``params``.

        Args:
            params: Prunable weights by full parameter name (the names of ``module``'s parameters).
            seed: The run seed; each score draws from ``derive_seed(seed, key, score[, round])``.
            key: What the masks are for, mixed into the seeds (``prune_at_init``, ``early_bird/<epoch>``, ...).
            module: The model, for gradient scores.
            batches: Training batches ``(inputs, targets)`` on the model's device, for data-dependent scores.
            reduce_mean: Averages tensors over DDP ranks (see :func:`mean_over_ranks`); ``None`` on one process.

        Returns:
            Masks over ``params`` at exactly the target sparsity (or the ``custom`` counts).

        Raises:
            ValueError: From a score (missing module, batches or input shape) or from selection (infeasible
                target).
        """
        dense = Masks.dense(params)

        def scores_of(name: str, masks: Masks, iteration: int | None = None) -> dict[str, Tensor]:
            keys = (key, name) if iteration is None else (key, name, iteration)
            context = ScoreContext(
                params=params,
                masks=masks,
                seed=derive_seed(seed, *keys),
                module=module,
                batches=batches,
                options=self.options,
                reduce_mean=reduce_mean,
            )
            return compute_scores(name, context)

        target = self.target_sparsity if self.target_sparsity is not None else 0.0
        if not self.global_ranking:
            return prune_to_sparsity(
                scores_of(self.score, dense),
                dense,
                target,
                scope="layerwise",
                distribution=self.distribution,
                layer_sparsity=self.layer_sparsity,
            )
        rounds = self.rounds
        ranking = iterative_global_prune(
            lambda masks, iteration: scores_of(self.ranking_score, masks, iteration if rounds > 1 else None),
            dense,
            target,
            rounds,
            self.min_weights_per_layer,
        )
        if self.ratio_from is None:
            return ranking
        return select_layerwise(scores_of(self.score, dense), dense, ranking.remaining_per_layer())


SPARSE_DISTRIBUTIONS = ("uniform", "er", "erk")
"""Layer-wise density distributions a sparse-from-scratch run accepts (RigL's choices)."""


def random_sparse_masks(
    params: Mapping[str, Tensor],
    target_sparsity: float,
    distribution: str,
    seed: int,
) -> Masks:
    """A random mask with exactly the layer-wise counts ``distribution`` gives at ``target_sparsity``.

    The engine's ``random`` score ranked per layer by :func:`~pruning_callbacks.engine.selection.prune_to_sparsity`, the
    initialization of sparse-from-scratch training in Evci et al. 2020 (https://arxiv.org/abs/1911.11134).

    Args:
        params: Prunable weights by full name.
        target_sparsity: Global fraction of weights removed, in ``[0, 1)``.
        distribution: ``uniform``, ``er`` or ``erk``.
        seed: Seed of the random scores.

    Raises:
        ValueError: As :func:`~pruning_callbacks.engine.selection.prune_to_sparsity`.
    """
    dense = Masks.dense(params)
    scores = compute_scores("random", ScoreContext(params=params, masks=dense, seed=seed))
    return prune_to_sparsity(scores, dense, target_sparsity, scope="layerwise", distribution=distribution)
