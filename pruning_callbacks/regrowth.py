"""Drop and grow: pure functions ``(weights, grow scores, current masks, fraction) -> new masks``.

The engine half of dynamic sparse training (RigL, Evci et al. 2020, https://arxiv.org/abs/1911.11134; SET, Mocanu
et al. 2018, https://arxiv.org/abs/1707.04780). In every layer, the ``k`` active weights with the smallest magnitude
are dropped and the ``k`` inactive connections with the largest grow score are activated, so each layer keeps exactly
the number of weights it had. What makes a method is its grow score, registered by name in :data:`GROW_SCORES`:
``gradient`` (``|dense gradient|``, RigL) or ``random`` (seeded uniform, SET).

Selection goes through :func:`~pruning_callbacks.selection.topk_mask`, so counts are exact and ties are broken by
position (among equal magnitudes the lower index is dropped first; among equal grow scores the lower index is grown
first). Everything stays on the weights' device; the only host values are the per-layer counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pruning_callbacks.masks import Masks
from pruning_callbacks.scores import ScoreContext, compute_scores
from pruning_callbacks.selection import topk_mask


def regrowth_count(active: int, numel: int, fraction: float) -> int:
    """Number of connections a layer drops and regrows: ``floor(fraction * active)``, at most ``numel - active``.

    The floor is RigL's reference rule (``n_prune = int(n_ones * drop_fraction)``). The cap exists because a
    just-dropped weight is never regrown in the same update, so only the connections inactive before the update can
    grow; a fully dense layer therefore never changes.

    Args:
        active: Weights the layer keeps now.
        numel: Weights in the layer.
        fraction: Drop fraction, in ``[0, 1]``.

    Raises:
        ValueError: If ``fraction`` is outside ``[0, 1]`` or ``active`` outside ``[0, numel]``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    if not 0 <= active <= numel:
        raise ValueError(f"active must be in [0, {numel}], got {active}.")
    return min(math.floor(fraction * active), numel - active)


def drop_smallest(weights: Tensor, mask: Tensor, count: int) -> Tensor:
    """The ``count`` active weights with the smallest magnitude (ties: the lower flat index first).

    Args:
        weights: A layer's weights, any shape and floating dtype.
        mask: Bool keep-mask of the same shape.
        count: How many to drop, at most the number of active weights.

    Returns:
        A bool tensor of the weights' shape, True at the dropped positions.

    Raises:
        ValueError: If the shapes differ or ``count`` is negative.
    """
    _check_same_shape(weights, mask, "weights")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    magnitude = torch.nan_to_num(weights.detach().abs().float(), nan=math.inf)
    # Inactive positions get -inf, so with count <= active they are never among the top `count`.
    candidates = torch.where(mask.to(weights.device), -magnitude, -math.inf)
    return topk_mask(candidates.reshape(-1), count).reshape(mask.shape)


def grow_largest(scores: Tensor, candidates: Tensor, count: int) -> Tensor:
    """The ``count`` candidate connections with the largest scores (ties: the lower flat index first).

    Args:
        scores: Grow scores of a layer, any shape; NaN counts as 0 and +inf as the largest finite value.
        candidates: Bool tensor of the same shape, True where a connection may grow.
        count: How many to grow, at most the number of candidates.

    Returns:
        A bool tensor of the scores' shape, True at the grown positions.

    Raises:
        ValueError: If the shapes differ or ``count`` is negative.
    """
    _check_same_shape(scores, candidates, "scores")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    finite = torch.nan_to_num(scores.detach().float(), nan=0.0, posinf=torch.finfo(torch.float32).max, neginf=0.0)
    ranked = torch.where(candidates.to(scores.device), finite, -math.inf)
    return topk_mask(ranked.reshape(-1), count).reshape(candidates.shape)


@dataclass(frozen=True)
class Regrowth:
    """The result of one drop-and-grow update.

    Attributes:
        masks: The new masks; every layer keeps as many weights as before.
        dropped: Per layer, True where a weight was active and is now dropped.
        grown: Per layer, True where a connection was inactive and is now active.
        counts: Per layer, how many connections were dropped (and as many grown).
    """

    masks: Masks
    dropped: dict[str, Tensor]
    grown: dict[str, Tensor]
    counts: dict[str, int]


def drop_and_grow(
    masks: Masks,
    weights: Mapping[str, Tensor],
    grow_scores: Mapping[str, Tensor],
    fraction: float,
) -> Regrowth:
    """Drop ``fraction`` of each layer's active weights by magnitude and grow as many by score.

    Per layer, ``k = regrowth_count(active, numel, fraction)`` active weights with the smallest ``|w|`` are dropped and
    the ``k`` connections inactive before the update with the largest grow scores are activated. Dropped and grown
    sets are disjoint: a weight dropped in this update is not a candidate for growth (see :func:`regrowth_count`).

    Args:
        masks: The current masks.
        weights: Parameter name to weights, covering the masked parameters.
        grow_scores: Parameter name to grow scores (higher grows first), covering the masked parameters.
        fraction: Drop fraction, in ``[0, 1]``.

    Returns:
        The new masks, the dropped and grown positions and the per-layer counts.

    Raises:
        ValueError: If ``weights`` or ``grow_scores`` miss a masked parameter or have a wrong shape, or ``fraction`` is
            outside ``[0, 1]``.
    """
    for argument, tensors in (("weights", weights), ("grow_scores", grow_scores)):
        missing = [name for name in masks if name not in tensors]
        if missing:
            raise ValueError(f"{argument} must cover every masked parameter; missing: {missing}.")
    active = masks.remaining_per_layer()
    new_masks: dict[str, Tensor] = {}
    dropped: dict[str, Tensor] = {}
    grown: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for name, mask in masks.items():
        count = regrowth_count(active[name], mask.numel(), fraction)
        drop = drop_smallest(weights[name], mask, count)
        grow = grow_largest(grow_scores[name], ~mask, count)
        new_masks[name] = (mask & ~drop.to(mask.device)) | grow.to(mask.device)
        dropped[name], grown[name], counts[name] = drop, grow, count
    return Regrowth(masks=Masks(new_masks), dropped=dropped, grown=grown, counts=counts)


def _check_same_shape(tensor: Tensor, mask: Tensor, argument: str) -> None:
    if tensor.shape != mask.shape:
        raise ValueError(f"{argument} have shape {tuple(tensor.shape)} but the mask has shape {tuple(mask.shape)}.")


# ---------------------------------------------------------------------------------------------------- grow scores
@dataclass(frozen=True)
class GrowContext:
    """Everything a grow score may look at.

    Attributes:
        params: Prunable weights by full name (inactive ones are 0).
        masks: The current masks.
        seed: Seed for any randomness, already derived from (run seed, step) by the caller, so every rank and a
            resumed run draw the same numbers.
        grads: Dense gradients by full name (``None`` where a weight got no gradient), read after DDP reduced them.
    """

    params: Mapping[str, Tensor]
    masks: Masks
    seed: int
    grads: Mapping[str, Tensor | None] | None = None


GrowScoreFn = Callable[[GrowContext], dict[str, Tensor]]

GROW_SCORES: dict[str, GrowScoreFn] = {}


def register_grow_score(name: str) -> Callable[[GrowScoreFn], GrowScoreFn]:
    """Decorator that registers a grow score under ``name``.

    Args:
        name: The name a dynamic sparse method uses to pick the score.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    if name in GROW_SCORES:
        raise ValueError(f"grow score '{name}' is already registered; known: {', '.join(sorted(GROW_SCORES))}")

    def decorator(score_fn: GrowScoreFn) -> GrowScoreFn:
        GROW_SCORES[name] = score_fn
        return score_fn

    return decorator


def get_grow_score(name: str) -> GrowScoreFn:
    """Look up a registered grow score.

    Args:
        name: A registered grow score name.

    Raises:
        ValueError: If ``name`` is not registered, listing the known names.
    """
    if name not in GROW_SCORES:
        raise ValueError(f"unknown grow score '{name}'; known grow scores: {', '.join(sorted(GROW_SCORES))}")
    return GROW_SCORES[name]


@register_grow_score("gradient")
def gradient_grow_scores(context: GrowContext) -> dict[str, Tensor]:
    """``|dense gradient|``: RigL's growth criterion (Evci et al. 2020, https://arxiv.org/abs/1911.11134).

    Args:
        context: Uses ``context.grads``; a weight without a gradient scores 0 everywhere.

    Raises:
        ValueError: If ``context.grads`` is ``None``.
    """
    if context.grads is None:
        raise ValueError("grow score 'gradient' needs the dense gradients (context.grads), got None.")
    scores: dict[str, Tensor] = {}
    for name, param in context.params.items():
        grad = context.grads.get(name)
        scores[name] = torch.zeros_like(param, dtype=torch.float32) if grad is None else grad.detach().abs()
    return scores


@register_grow_score("random")
def random_grow_scores(context: GrowContext) -> dict[str, Tensor]:
    """Uniform random scores: SET's growth criterion (Mocanu et al. 2018, https://arxiv.org/abs/1707.04780).

    The registered ``random`` importance score, so the numbers are drawn on the CPU from ``context.seed`` and are the
    same on every device and rank.

    Args:
        context: Uses ``context.params``, ``context.masks`` and ``context.seed``.
    """
    return compute_scores("random", ScoreContext(params=context.params, masks=context.masks, seed=context.seed))
