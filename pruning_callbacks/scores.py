"""Importance scores: one function per method, registered by name.

A score function takes a :class:`ScoreContext` and returns one float tensor per prunable parameter, of
the parameter's shape; higher means more important. Selection (:mod:`pruning_callbacks.selection`) then
keeps the highest-scoring weights among those still alive. A new method is added by writing one function
and decorating it with :func:`register_score`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruning_callbacks.masks import Masks


@dataclass(frozen=True)
class ScoreContext:
    """Everything a score function may look at.

    Attributes:
        params: Prunable weights by full name, already masked (pruned weights are 0).
        masks: The current masks.
        seed: Seed for any randomness, already derived from (run seed, step or round) by the caller, so
            every rank draws the same numbers.
        module: The whole model, for gradient-based scores (SNIP, GraSP, SynFlow).
        batches: Training batches ``(inputs, targets)`` for data-dependent scores.
    """

    params: Mapping[str, Tensor]
    masks: Masks
    seed: int
    module: nn.Module | None = None
    batches: Sequence[tuple[Tensor, Tensor]] | None = None


ScoreFn = Callable[[ScoreContext], dict[str, Tensor]]

SCORES: dict[str, ScoreFn] = {}


def register_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator that registers a score function under ``name``.

    Args:
        name: The name configs use to pick the score.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    if name in SCORES:
        raise ValueError(f"score '{name}' is already registered; known scores: {', '.join(sorted(SCORES))}")

    def decorator(score_fn: ScoreFn) -> ScoreFn:
        SCORES[name] = score_fn
        return score_fn

    return decorator


def get_score(name: str) -> ScoreFn:
    """Look up a registered score function.

    Args:
        name: A registered score name.

    Raises:
        ValueError: If ``name`` is not registered, listing the known names.
    """
    if name not in SCORES:
        raise ValueError(f"unknown score '{name}'; known scores: {', '.join(sorted(SCORES))}")
    return SCORES[name]


def compute_scores(name: str, context: ScoreContext) -> dict[str, Tensor]:
    """Run the score ``name`` and check that it returns one float32 tensor per parameter.

    Args:
        name: A registered score name.
        context: What the score may look at.

    Returns:
        Parameter name to detached float32 scores of the parameter's shape, in parameter order.

    Raises:
        ValueError: If ``name`` is unknown, or the score misses a parameter, returns an unknown one, or
            returns a tensor of the wrong shape.
    """
    scores = get_score(name)(context)
    missing = [param_name for param_name in context.params if param_name not in scores]
    unexpected = [param_name for param_name in scores if param_name not in context.params]
    if missing or unexpected:
        raise ValueError(
            f"score '{name}' must return one tensor per prunable parameter; missing: {missing}, "
            f"unexpected: {unexpected}."
        )
    checked: dict[str, Tensor] = {}
    for param_name, param in context.params.items():
        score = scores[param_name]
        if score.shape != param.shape:
            raise ValueError(
                f"score '{name}' returned shape {tuple(score.shape)} for '{param_name}', "
                f"whose shape is {tuple(param.shape)}."
            )
        checked[param_name] = score.detach().to(torch.float32)
    return checked


@register_score("magnitude")
def magnitude_scores(context: ScoreContext) -> dict[str, Tensor]:
    """Absolute weight value ``|w|``.

    Magnitude pruning from Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
    Networks" (https://arxiv.org/abs/1506.02626), as used for lottery tickets by Frankle & Carbin 2019
    (https://arxiv.org/abs/1803.03635).

    Args:
        context: Uses ``context.params``.
    """
    return {name: param.detach().abs() for name, param in context.params.items()}


@register_score("random")
def random_scores(context: ScoreContext) -> dict[str, Tensor]:
    """Uniform random scores in ``[0, 1)``, the random-pruning baseline.

    Drawn on the CPU from ``torch.Generator().manual_seed(context.seed)``, layer by layer in parameter
    order, then moved to each parameter's device, so every device type and every DDP rank gets the same
    numbers for the same seed.

    Args:
        context: Uses ``context.params`` (shapes and devices) and ``context.seed``.
    """
    generator = torch.Generator().manual_seed(context.seed)
    return {
        name: torch.rand(param.shape, generator=generator, dtype=torch.float32).to(param.device)
        for name, param in context.params.items()
    }
