"""Drop and grow: pure functions ``(weights, grow scores, current masks, fraction) -> new masks``.

The engine half of dynamic sparse training (RigL, Evci et al. 2020, https://arxiv.org/abs/1911.11134; SET, Mocanu
et al. 2018, https://arxiv.org/abs/1707.04780). In every layer, the ``k`` active weights with the smallest magnitude
are dropped and the ``k`` inactive connections with the largest grow score are activated, so each layer keeps exactly
the number of weights it had. What makes a method is its grow score, a score of the one registry
(:data:`~pruning_callbacks.engine.scores.SCORES`): ``gradient`` (``|dense gradient|`` from ``ScoreContext.grads``,
RigL) or ``random`` (seeded uniform, SET).

Selection goes through :func:`~pruning_callbacks.engine.selection.topk_mask`, so counts are exact and ties are broken by
position (among equal magnitudes the lower index is dropped first; among equal grow scores the lower index is grown
first). Everything stays on the weights' device; the only host values are the per-layer counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pruning_callbacks.engine.checks import ToolkitDeprecationWarning
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import SCORES, ScoreContext, ScoreFn, get_score, register_score
from pruning_callbacks.engine.selection import topk_mask


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


@dataclass(frozen=True)
class RegrowthRecord:
    """What one drop-and-grow update did, as a dynamic sparse callback logs it.

    Attributes:
        step: The optimizer step (``trainer.global_step`` before it) at which the masks changed.
        drop_fraction: The cosine-decayed fraction ``f(step)``.
        changed: Per layer, the number of connections moved: as many dropped as grown.
        grown_survival: Fraction of the connections grown at the previous update that this update kept active;
            ``None`` at the first update.
        layer_grown_survival: The same per layer, for layers that grew connections at the previous update.
    """

    step: int
    drop_fraction: float
    changed: dict[str, int]
    grown_survival: float | None = None
    layer_grown_survival: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """The ``regrowth/*`` scalars a logger records for this update."""
        metrics = {"regrowth/drop_fraction": self.drop_fraction, "regrowth/changed": float(sum(self.changed.values()))}
        metrics.update({f"regrowth/changed/{name}": float(count) for name, count in self.changed.items()})
        if self.grown_survival is not None:
            metrics["regrowth/grown_survival"] = self.grown_survival
        metrics.update({f"regrowth/grown_survival/{name}": value for name, value in self.layer_grown_survival.items()})
        return metrics


def regrowth_record(
    step: int,
    fraction: float,
    counts: Mapping[str, int],
    grown: Mapping[str, Tensor],
    previous_grown: Masks | None,
    masks: Masks,
) -> RegrowthRecord:
    """The record of an update: what moved, and how many of the previous update's grown connections survived it.

    Args:
        step: The optimizer step of the update.
        fraction: Its drop fraction.
        counts: Per layer, how many connections moved.
        grown: Per layer, the connections this update grew.
        previous_grown: The connections the previous update grew (``None`` before the first update).
        masks: The masks after this update.
    """
    survival: float | None = None
    layer_survival: dict[str, float] = {}
    if previous_grown is not None:
        before = previous_grown.remaining_per_layer()
        kept = (previous_grown & masks).remaining_per_layer()
        layer_survival = {name: kept[name] / before[name] for name in before if before[name] > 0}
        total_before = sum(before.values())
        survival = sum(kept.values()) / total_before if total_before else None
    return RegrowthRecord(
        step=step,
        drop_fraction=fraction,
        changed=dict(counts),
        grown_survival=survival,
        layer_grown_survival=layer_survival,
    )


def zero_grown(
    params: Mapping[str, Tensor], grown: Mapping[str, Tensor], optimizers: Sequence[torch.optim.Optimizer]
) -> None:
    """Make grown connections start at 0: the weight, its current gradient and every optimizer state tensor.

    RigL's ``grow_init: zeros`` (Evci et al. 2020, https://arxiv.org/abs/1911.11134), with the momentum of a
    connection that was pruned before reset too, so it does not come back with stale state.
    """
    for name, param in params.items():
        positions = grown[name]
        param.masked_fill_(positions, 0.0)
        if param.grad is not None:
            param.grad.masked_fill_(positions, 0.0)
        for optimizer in optimizers:
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, Tensor) and value.shape == param.shape:
                    value.masked_fill_(positions, 0)


# ------------------------------------------------------------------------------- deprecated grow-score registry
def GrowContext(
    params: Mapping[str, Tensor], masks: Masks, seed: int, grads: Mapping[str, Tensor | None] | None = None
) -> ScoreContext:
    """Deprecated: grow scores are ordinary scores now; build a :class:`~.scores.ScoreContext` with ``grads``."""
    _deprecated("GrowContext(...)", "ScoreContext(..., grads=...)")
    return ScoreContext(params=params, masks=masks, seed=seed, grads=grads)


def get_grow_score(name: str) -> Callable[[ScoreContext], dict[str, Tensor]]:
    """Deprecated: every score lives in the one registry; use :func:`~.scores.get_score`."""
    _deprecated("get_grow_score", "get_score")
    return get_score(name)


def register_grow_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Deprecated: use :func:`~.scores.register_score`."""
    _deprecated("register_grow_score", "register_score")
    return register_score(name)


GROW_SCORES = SCORES
"""Deprecated: the one registry, :data:`~.scores.SCORES` (``gradient`` and ``random`` grow RigL and SET)."""


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"pruning_callbacks.engine.regrowth.{old} is deprecated: the grow scores joined the one score registry; "
        f"use pruning_callbacks.engine.scores.{new}. The old name will be removed in the next release.",
        ToolkitDeprecationWarning,
        stacklevel=3,
    )
