"""Top-k selection: pure functions ``(scores, current masks) -> new masks``.

Modelled on open_lth's ``pruning/sparse_global.py``. Only weights the current masks keep are candidates,
so a pruned weight never comes back and the new masks are always a subset of the old ones. Ties are
broken by position (lower index first; across layers, earlier layer first), so a requested count is hit
exactly and the result is deterministic on every device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from pruning_callbacks.engine.distributions import (
    CUSTOM,
    DISTRIBUTIONS,
    check_layer_sparsity,
    check_target_sparsity,
    known_distributions,
    layer_keep_counts,
)
from pruning_callbacks.engine.masks import Masks

SCOPES = ("global", "layerwise")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16/bfloat16 widen exactly to float32, so ties survive; integers and float64 need float64.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float64


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask with exactly ``k`` True entries at the ``k`` highest ``scores``.

    Among equal scores the lower index is kept. Runs in O(n) without a host sync: the threshold is the
    k-th largest value (``torch.kthvalue``), every score above it is kept, and the first ``need`` scores
    equal to it (by ``cumsum``) fill the rest. Scores must not contain NaN.

    Args:
        scores: 1-D scores on any device, any floating or integer dtype.
        k: Number of entries to keep, in ``[0, scores.numel()]``.

    Raises:
        ValueError: If ``scores`` is not 1-D or ``k`` is out of range.
    """
    if scores.dim() != 1:
        raise ValueError(f"topk_mask needs 1-D scores, got shape {tuple(scores.shape)}.")
    numel = scores.numel()
    if not 0 <= k <= numel:
        raise ValueError(f"k must be in [0, {numel}], got {k}.")
    if k == 0:
        return torch.zeros(numel, dtype=torch.bool, device=scores.device)
    if k == numel:
        return torch.ones(numel, dtype=torch.bool, device=scores.device)
    values = scores.detach().to(_compute_dtype(scores.dtype))
    threshold = torch.kthvalue(values, numel - k + 1).values
    above = values > threshold
    at_threshold = values == threshold
    need = k - above.sum()
    return above | (at_threshold & (torch.cumsum(at_threshold, dim=0) <= need))


def _check_scores(scores: Mapping[str, Tensor], masks: Masks) -> None:
    if set(scores) != set(masks):
        missing = [name for name in masks if name not in scores]
        unexpected = [name for name in scores if name not in masks]
        raise ValueError(
            f"scores must cover exactly the masked parameters; missing: {missing}, unexpected: {unexpected}."
        )
    for name, mask in masks.items():
        if scores[name].shape != mask.shape:
            raise ValueError(
                f"scores for '{name}' have shape {tuple(scores[name].shape)} but its mask has shape "
                f"{tuple(mask.shape)}."
            )
    has_nan = [torch.isnan(scores[name]).any() for name in masks]
    for name, nan in zip(masks, has_nan, strict=True):
        if bool(nan):
            raise ValueError(f"scores for '{name}' contain NaN.")


def _alive_scores(scores: Mapping[str, Tensor], masks: Masks) -> dict[str, Tensor]:
    """The scores of the weights each mask still keeps, flattened in storage order."""
    dtypes = {_compute_dtype(score.dtype) for score in scores.values()}
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    return {
        name: scores[name].detach().to(mask.device, dtype).reshape(-1)[mask.reshape(-1)] for name, mask in masks.items()
    }


def _scatter(mask: Tensor, kept_alive: Tensor) -> Tensor:
    new_mask = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    new_mask[mask.reshape(-1)] = kept_alive.to(mask.device)
    return new_mask.reshape(mask.shape)


def select_global(scores: Mapping[str, Tensor], masks: Masks, keep: int) -> Masks:
    """Keep the ``keep`` highest-scoring weights over all layers jointly, among those ``masks`` keeps.

    Global magnitude pruning as in Frankle & Carbin 2019 (https://arxiv.org/abs/1803.03635). Ties are
    broken by position in the concatenation of the layers in parameter order.

    Args:
        scores: Parameter name to scores of the parameter's shape (higher = more important).
        masks: The current masks; weights they prune are never selected.
        keep: Number of weights to keep in all.

    Raises:
        ValueError: If scores and masks cover different parameters or shapes, a score is NaN, or ``keep``
            is negative or more than the weights that remain.
    """
    _check_scores(scores, masks)
    remaining = masks.remaining()
    if not 0 <= keep <= remaining:
        raise ValueError(f"cannot keep {keep} weights: only {remaining} of {masks.total} remain (masks only shrink).")
    alive = _alive_scores(scores, masks)
    device = next(iter(masks.values())).device
    kept = topk_mask(torch.cat([values.to(device) for values in alive.values()]), keep)
    pieces = torch.split(kept, list(masks.remaining_per_layer().values()))
    new_masks = {name: _scatter(mask, piece) for (name, mask), piece in zip(masks.items(), pieces, strict=True)}
    return Masks._wrap(new_masks)


def select_layerwise(scores: Mapping[str, Tensor], masks: Masks, keep: Mapping[str, int]) -> Masks:
    """Keep the ``keep[name]`` highest-scoring weights of each layer, among those ``masks`` keeps.

    Args:
        scores: Parameter name to scores of the parameter's shape (higher = more important).
        masks: The current masks; weights they prune are never selected.
        keep: Parameter name to the number of weights to keep in that layer.

    Raises:
        ValueError: If scores, masks and ``keep`` cover different parameters, shapes differ, a score is
            NaN, or a layer is asked to keep a negative number or more than remain in it.
    """
    _check_scores(scores, masks)
    if set(keep) != set(masks):
        missing = [name for name in masks if name not in keep]
        unexpected = [name for name in keep if name not in masks]
        raise ValueError(
            f"keep must give a count for exactly the masked parameters; missing: {missing}, unexpected: {unexpected}."
        )
    remaining = masks.remaining_per_layer()
    for name in masks:
        if not 0 <= keep[name] <= remaining[name]:
            raise ValueError(
                f"cannot keep {keep[name]} weights in '{name}': only {remaining[name]} of "
                f"{masks[name].numel()} remain (masks only shrink)."
            )
    alive = _alive_scores(scores, masks)
    return Masks._wrap({name: _scatter(mask, topk_mask(alive[name], keep[name])) for name, mask in masks.items()})


def select_global_with_floor(scores: Mapping[str, Tensor], masks: Masks, keep: int, min_per_layer: int) -> Masks:
    """Exact global top-``keep`` that keeps at least ``min_per_layer`` weights in every layer.

    Each layer's ``min(min_per_layer, remaining)`` best weights are reserved first; the rest of the budget goes to
    the best weights over all layers, as in :func:`~pruning_callbacks.engine.selection.select_global` (same tie rule).
    Where plain global selection empties no layer, the result is the same as plain global selection.

    Args:
        scores: Parameter name to scores of the parameter's shape (higher = more important).
        masks: The current masks; weights they prune are never selected.
        keep: Number of weights to keep in all.
        min_per_layer: Weights each layer keeps at least (fewer only where fewer remain); 0 for plain global top-k.

    Raises:
        ValueError: If ``keep`` is smaller than the reserved weights, or any error of ``select_global``.
    """
    if min_per_layer <= 0:
        return select_global(scores, masks, keep)
    reserve = {name: min(min_per_layer, left) for name, left in masks.remaining_per_layer().items()}
    if keep < sum(reserve.values()):
        raise ValueError(
            f"cannot keep only {keep} weights when each of the {len(masks)} layers keeps at least {min_per_layer} "
            f"({sum(reserve.values())} in all); set min_weights_per_layer: 0 to allow emptying layers."
        )
    plain = select_global(scores, masks, keep)
    # Plain global top-k keeps each layer's best weights first, so where it leaves every layer its reserve it is
    # already the answer; only otherwise are the reserves selected explicitly.
    if all(kept >= reserve[name] for name, kept in plain.remaining_per_layer().items()):
        return plain
    reserved = select_layerwise(scores, masks, reserve)
    # The reserved weights outrank every other, so the global top-k takes them first and fills the rest by score.
    boosted = {}
    for name, score in scores.items():
        score = score.to(torch.promote_types(score.dtype, torch.float32))
        boosted[name] = torch.where(reserved[name].to(score.device), torch.inf, score)
    return select_global(boosted, masks, keep)


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'.")


def check_pruning_request(
    target_sparsity: float | None,
    scope: str = "global",
    distribution: str = "uniform",
    layer_sparsity: Mapping[str, float] | None = None,
) -> None:
    """Validate the arguments of :func:`prune_to_sparsity` without any tensors.

    Callbacks call this in ``__init__`` so that a bad YAML value fails at config time, with the same one-line
    message :func:`prune_to_sparsity` would give later.

    Args:
        target_sparsity: Global fraction of weights to prune; may be ``None`` only for ``custom``.
        scope: ``global`` or ``layerwise``.
        distribution: A registered distribution or ``custom``.
        layer_sparsity: Pattern -> sparsity map, for ``custom`` only.

    Raises:
        ValueError: On an unknown scope or distribution, a distribution given with ``global`` scope,
            ``custom`` without ``layer_sparsity`` (or ``layer_sparsity`` without ``custom``), or a
            ``target_sparsity`` outside ``[0, 1)``.
    """
    _check_scope(scope)
    if scope == "global" and (distribution != "uniform" or layer_sparsity is not None):
        raise ValueError(
            f"distribution applies only to scope 'layerwise', got distribution '{distribution}' with scope 'global'."
        )
    if distribution != CUSTOM and distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution '{distribution}'; known distributions: {known_distributions()}")
    if distribution == CUSTOM:
        if not layer_sparsity:
            raise ValueError("distribution 'custom' needs layer_sparsity (a map of layer pattern -> sparsity).")
        check_layer_sparsity(layer_sparsity)  # every value, NaN included, at config time rather than in setup
        return
    if layer_sparsity is not None:
        raise ValueError(f"layer_sparsity applies only to distribution 'custom', got distribution '{distribution}'.")
    check_target_sparsity(target_sparsity)


def prune_to_sparsity(
    scores: Mapping[str, Tensor],
    masks: Masks,
    target_sparsity: float,
    scope: str = "global",
    distribution: str = "uniform",
    layer_sparsity: Mapping[str, float] | None = None,
    *,
    first_layer: str | None = None,
    last_layer: str | None = None,
    erk_power_scale: float = 1.0,
) -> Masks:
    """Prune to exactly ``target_sparsity``, keeping the highest-scoring weights that are still alive.

    In ``global`` scope, ``round((1 - target_sparsity) * total)`` weights are kept, chosen over all layers
    jointly. In ``layerwise`` scope, each layer keeps the count
    :func:`~pruning_callbacks.engine.distributions.layer_keep_counts` gives for ``distribution``.

    Args:
        scores: Parameter name to scores of the parameter's shape (higher = more important).
        masks: The current masks; weights they prune are never selected.
        target_sparsity: Global fraction of weights to prune, in ``[0, 1)`` (ignored for ``custom``).
        scope: ``global`` or ``layerwise``.
        distribution: Layer-wise density distribution; only ``uniform`` (the default) with ``global``.
        layer_sparsity: Pattern -> sparsity map for ``distribution="custom"``.
        first_layer: See :func:`~pruning_callbacks.engine.distributions.layer_keep_counts`.
        last_layer: See :func:`~pruning_callbacks.engine.distributions.layer_keep_counts`.
        erk_power_scale: See :func:`~pruning_callbacks.engine.distributions.layer_keep_counts`.

    Raises:
        ValueError: On an unknown scope, a distribution or ``layer_sparsity`` given with ``global`` scope,
            a ``target_sparsity`` outside ``[0, 1)``, masks already sparser than the target, or any error
            of :func:`select_global` / :func:`select_layerwise` / ``layer_keep_counts``.
    """
    check_pruning_request(target_sparsity, scope, distribution, layer_sparsity)
    if scope == "global":
        return select_global(scores, masks, round((1.0 - target_sparsity) * masks.total))
    shapes = {name: mask.shape for name, mask in masks.items()}
    counts = layer_keep_counts(
        distribution,
        shapes,
        target_sparsity,
        layer_sparsity=layer_sparsity,
        first_layer=first_layer,
        last_layer=last_layer,
        erk_power_scale=erk_power_scale,
    )
    return select_layerwise(scores, masks, counts)


def prune_fraction(scores: Mapping[str, Tensor], masks: Masks, fraction: float, scope: str = "global") -> Masks:
    """Remove ``fraction`` of the weights that currently remain, as iterative magnitude pruning does.

    Global scope removes ``round(fraction * remaining)`` weights over all layers jointly; layerwise scope
    removes ``round(fraction * remaining_in_layer)`` from each layer. Frankle & Carbin 2019
    (https://arxiv.org/abs/1803.03635) prune 20% per round this way.

    Args:
        scores: Parameter name to scores of the parameter's shape (higher = more important).
        masks: The current masks; weights they prune are never selected.
        fraction: Fraction of the remaining weights to remove, in ``[0, 1)``.
        scope: ``global`` or ``layerwise``.

    Raises:
        ValueError: On an unknown scope, a ``fraction`` outside ``[0, 1)``, or any error of
            :func:`select_global` / :func:`select_layerwise`.
    """
    _check_scope(scope)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
    if scope == "global":
        remaining = masks.remaining()
        return select_global(scores, masks, remaining - round(fraction * remaining))
    keep = {name: left - round(fraction * left) for name, left in masks.remaining_per_layer().items()}
    return select_layerwise(scores, masks, keep)


STD_OF = ("layer", "initial", "remaining")
"""What the standard deviation of Han et al.'s threshold is taken over (see :func:`prune_below_std_threshold`)."""


def layer_stds(params: Mapping[str, Tensor], names: Iterable[str]) -> dict[str, float]:
    """The standard deviation of each named weight tensor, all of it (pruned zeros included), in float64.

    Args:
        params: Parameter name to weights.
        names: The parameters to measure.
    """
    return {name: float(params[name].detach().double().std()) if params[name].numel() > 1 else 0.0 for name in names}


def prune_below_std_threshold(
    params: Mapping[str, Tensor],
    masks: Masks,
    quality: float,
    std_of: str = "layer",
    initial_stds: Mapping[str, float] | None = None,
) -> Masks:
    """Prune, in each layer, the remaining weights whose magnitude is below ``quality`` × a standard deviation.

    The threshold rule of Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks"
    (https://arxiv.org/abs/1506.02626): a layer's threshold is ``quality`` × the standard deviation ``σ`` of its
    weights. Which weights ``σ`` is taken over is ``std_of``:

    * ``layer`` (the seed report's rule, the default): the layer's whole weight tensor as it is now, pruned zeros
      included. Pruning again with unchanged weights prunes nothing more (zeroing small weights does not raise
      ``σ`` for weights centred near 0); only fine-tuning, by moving weights below the threshold, does.
    * ``initial`` (Distiller's ``SensitivityPruner``): ``σ`` of the dense layer, measured at the first pruning and
      passed back in ``initial_stds`` afterwards, so the threshold is fixed.
    * ``remaining``: ``σ`` of the weights still alive, recomputed each time. The threshold tightens on what
      survived, so passes compound even without fine-tuning (at quality 1 on Gaussian weights, about 32%, 11%, 4%
      kept after 1, 2, 3 passes).

    Weights at or above the threshold are kept (through :func:`select_layerwise`, so the counts are exact and ties
    deterministic); weights already pruned stay pruned.

    Args:
        params: Parameter name to current weights.
        masks: The current masks; only the weights they keep are candidates.
        quality: Multiple of the standard deviation below which a weight is pruned; positive.
        std_of: ``layer``, ``initial`` or ``remaining``.
        initial_stds: For ``std_of: initial``: each layer's dense standard deviation (:func:`layer_stds` of the
            dense weights); required then.

    Raises:
        ValueError: If ``quality`` is not positive, ``std_of`` is unknown, ``initial_stds`` misses a layer, or params
            and masks do not match.
    """
    if isinstance(quality, bool) or not isinstance(quality, int | float) or not 0 < quality < math.inf:
        raise ValueError(f"quality must be a positive finite number, got {quality}.")
    if std_of not in STD_OF:
        raise ValueError(f"std_of must be one of {', '.join(STD_OF)}, got {std_of!r}.")
    if std_of == "initial":
        missing = [name for name in masks if initial_stds is None or name not in initial_stds]
        if missing:
            raise ValueError(f"std_of 'initial' needs the dense standard deviation of every layer; missing: {missing}.")
    scores = {name: params[name].detach().abs() for name in masks}
    keep: dict[str, int] = {}
    for name, mask in masks.items():
        weights = params[name].detach().double()
        alive = weights[mask.to(weights.device)]
        if std_of == "remaining":
            if alive.numel() < 2:
                keep[name] = alive.numel()
                continue
            sigma = float(alive.std())
        elif std_of == "layer":
            sigma = layer_stds(params, [name])[name]
        else:
            assert initial_stds is not None
            sigma = float(initial_stds[name])
        keep[name] = int((alive.abs() >= quality * sigma).sum())
    return select_layerwise(scores, masks, keep)
