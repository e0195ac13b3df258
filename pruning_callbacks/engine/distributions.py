"""Layer-wise density distributions: how a global weight budget is split across layers.

Modelled on jaxpruner's ``sparsity_distributions.py`` and RigL's ``sparse_utils.get_sparsities_erdos_renyi``.
Every distribution shares one signature (:class:`DensityFn`): it gets the layer shapes and the number of
weights to keep, and returns float densities whose weighted sum is that budget. :func:`layer_keep_counts`
then apportions whole weights (largest remainder), so the requested global sparsity is hit to one weight.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

UPLUS_LAST_LAYER_MIN_DENSITY = 0.2
"""Smallest density of the classifier under ``uniform_plus`` (at most 80% sparse, Gale et al. 2019)."""


class DensityFn(Protocol):
    """Signature shared by all registered distributions.

    A distribution returns a density in ``[0, 1]`` for every layer of ``shapes`` such that
    ``sum(density * numel) == keep_budget`` (up to float rounding). A layer it wants fully dense gets
    exactly ``1.0``.
    """

    def __call__(
        self,
        shapes: Mapping[str, torch.Size],
        keep_budget: int,
        *,
        first_layer: str,
        last_layer: str,
        erk_power_scale: float,
    ) -> dict[str, float]:
        """Return the density of each layer."""
        ...


DISTRIBUTIONS: dict[str, DensityFn] = {}

CUSTOM = "custom"


def register_distribution(name: str) -> Callable[[DensityFn], DensityFn]:
    """Decorator that registers a density distribution under ``name``.

    Args:
        name: The name configs use to pick the distribution.

    Raises:
        ValueError: If ``name`` is already registered or is the reserved name ``custom``.
    """
    if name in DISTRIBUTIONS or name == CUSTOM:
        raise ValueError(f"distribution '{name}' is already registered; known distributions: {known_distributions()}")

    def decorator(density_fn: DensityFn) -> DensityFn:
        DISTRIBUTIONS[name] = density_fn
        return density_fn

    return decorator


def known_distributions() -> str:
    """The names ``distribution`` accepts, sorted and comma-separated (for error messages)."""
    return ", ".join(sorted([*DISTRIBUTIONS, CUSTOM]))


def _numels(shapes: Mapping[str, torch.Size]) -> dict[str, int]:
    return {name: math.prod(shape) for name, shape in shapes.items()}


def _infeasible(name: str, keep_budget: int, total: int, minimum_keep: float, why: str) -> ValueError:
    return ValueError(
        f"distribution '{name}' cannot reach sparsity {1 - keep_budget / total:.6g}: {why} keep "
        f"{minimum_keep:g} of {total} weights, so the largest feasible sparsity is "
        f"{1 - minimum_keep / total:.6g}."
    )


def _solve_proportional(
    shapes: Mapping[str, torch.Size],
    keep_budget: int,
    raw_density: Mapping[str, float],
    dense: set[str],
) -> dict[str, float]:
    """Densities ``eps * raw_density`` for the sparse layers, with ``eps`` spending the budget exactly.

    Any layer whose density would exceed 1 joins the dense set and ``eps`` is solved again, until none
    does (RigL's loop). Moving every offender at once gives the same result as RigL moving the largest one
    per pass: densifying a layer frees budget, so ``eps`` only grows and an offender stays an offender.
    """
    numels = _numels(shapes)
    dense = set(dense)
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            return dict.fromkeys(shapes, 1.0)
        budget_left = keep_budget - sum(numels[name] for name in dense)
        divisor = sum(raw_density[name] * numels[name] for name in sparse)
        eps = budget_left / divisor
        too_dense = {name for name in sparse if eps * raw_density[name] > 1.0}
        if not too_dense:
            return {name: 1.0 if name in dense else eps * raw_density[name] for name in shapes}
        dense |= too_dense


@register_distribution("uniform")
def uniform(
    shapes: Mapping[str, torch.Size],
    keep_budget: int,
    *,
    first_layer: str,
    last_layer: str,
    erk_power_scale: float,
) -> dict[str, float]:
    """Every layer at the same density.

    Args:
        shapes: Layer name to weight shape, in parameter order.
        keep_budget: Number of weights to keep in all.
        first_layer: Unused.
        last_layer: Unused.
        erk_power_scale: Unused.
    """
    density = keep_budget / sum(_numels(shapes).values())
    return dict.fromkeys(shapes, density)


@register_distribution("uniform_plus")
def uniform_plus(
    shapes: Mapping[str, torch.Size],
    keep_budget: int,
    *,
    first_layer: str,
    last_layer: str,
    erk_power_scale: float,
) -> dict[str, float]:
    """First layer dense, last layer at least 20% dense, the rest uniform.

    From Gale et al. 2019, "The State of Sparsity in Deep Neural Networks"
    (https://arxiv.org/abs/1902.09574). The last layer gets ``max(0.2, d)`` where ``d`` is the uniform
    density of the other layers that spends the budget.

    Args:
        shapes: Layer name to weight shape, in parameter order.
        keep_budget: Number of weights to keep in all.
        first_layer: The layer kept dense.
        last_layer: The layer kept at least 20% dense.
        erk_power_scale: Unused.

    Raises:
        ValueError: If the dense first layer and 20% of the last layer already exceed the budget.
    """
    numels = _numels(shapes)
    total = sum(numels.values())
    last_floor = UPLUS_LAST_LAYER_MIN_DENSITY if last_layer != first_layer else 0.0
    minimum_keep = numels[first_layer] + last_floor * numels[last_layer]
    if keep_budget < minimum_keep:
        raise _infeasible(
            "uniform_plus", keep_budget, total, minimum_keep, "the dense first layer and 20% of the last layer"
        )
    rest = [name for name in shapes if name != first_layer]
    densities = {first_layer: 1.0}
    if not rest:
        return densities
    budget_left = keep_budget - numels[first_layer]
    density = budget_left / sum(numels[name] for name in rest)
    if density >= last_floor:
        densities.update(dict.fromkeys(rest, density))
    else:
        middle = [name for name in rest if name != last_layer]
        middle_numel = sum(numels[name] for name in middle)
        middle_density = (budget_left - last_floor * numels[last_layer]) / middle_numel if middle else 0.0
        densities.update(dict.fromkeys(middle, middle_density))
        densities[last_layer] = last_floor
    return {name: densities[name] for name in shapes}


@register_distribution("er")
def erdos_renyi(
    shapes: Mapping[str, torch.Size],
    keep_budget: int,
    *,
    first_layer: str,
    last_layer: str,
    erk_power_scale: float,
) -> dict[str, float]:
    """Erdős–Rényi: density proportional to ``(n_in + n_out) / (n_in * n_out)``.

    From Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse
    connectivity inspired by network science" (https://arxiv.org/abs/1707.04780). ``n_out, n_in`` are the
    first two dimensions of the ``(out, in, ...)`` weight; kernel dimensions are ignored (use ``erk`` to
    count them). Layers that would exceed density 1 are made dense and the rest re-solved.

    Args:
        shapes: Layer name to weight shape, in parameter order.
        keep_budget: Number of weights to keep in all.
        first_layer: Unused.
        last_layer: Unused.
        erk_power_scale: Unused.

    Raises:
        ValueError: If a shape has fewer than two dimensions.
    """
    raw: dict[str, float] = {}
    for name, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(f"distribution 'er' needs weights with at least 2 dimensions; '{name}' is {tuple(shape)}.")
        n_out, n_in = shape[0], shape[1]
        raw[name] = (n_in + n_out) / (n_in * n_out)
    return _solve_proportional(shapes, keep_budget, raw, dense=set())


def _erk_raw(shapes: Mapping[str, torch.Size], erk_power_scale: float) -> dict[str, float]:
    return {name: (sum(shape) / math.prod(shape)) ** erk_power_scale for name, shape in shapes.items()}


@register_distribution("erk")
def erdos_renyi_kernel(
    shapes: Mapping[str, torch.Size],
    keep_budget: int,
    *,
    first_layer: str,
    last_layer: str,
    erk_power_scale: float,
) -> dict[str, float]:
    """Erdős–Rényi-Kernel: density proportional to ``(sum(shape) / prod(shape)) ** erk_power_scale``.

    From Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners" (RigL,
    https://arxiv.org/abs/1911.11134). Layers that would exceed density 1 are made dense and the rest
    re-solved.

    Args:
        shapes: Layer name to weight shape, in parameter order.
        keep_budget: Number of weights to keep in all.
        first_layer: Unused.
        last_layer: Unused.
        erk_power_scale: Exponent on the raw ERK density; 0 gives uniform, 1 is RigL's ERK.
    """
    return _solve_proportional(shapes, keep_budget, _erk_raw(shapes, erk_power_scale), dense=set())


@register_distribution("erk_plus")
def erdos_renyi_kernel_plus(
    shapes: Mapping[str, torch.Size],
    keep_budget: int,
    *,
    first_layer: str,
    last_layer: str,
    erk_power_scale: float,
) -> dict[str, float]:
    """ERK over every layer but the last (the classifier), which stays dense.

    From Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning: Return of the Most Naive
    Baseline for Sparse Training" (https://arxiv.org/abs/2202.02643).

    Args:
        shapes: Layer name to weight shape, in parameter order.
        keep_budget: Number of weights to keep in all.
        first_layer: Unused.
        last_layer: The layer kept dense.
        erk_power_scale: Exponent on the raw ERK density.

    Raises:
        ValueError: If the dense last layer alone exceeds the budget.
    """
    numels = _numels(shapes)
    if keep_budget < numels[last_layer]:
        raise _infeasible(
            "erk_plus", keep_budget, sum(numels.values()), numels[last_layer], "the dense last layer alone would"
        )
    return _solve_proportional(shapes, keep_budget, _erk_raw(shapes, erk_power_scale), dense={last_layer})


def _apportion(densities: Mapping[str, float], numels: Mapping[str, int], keep_budget: int) -> dict[str, int]:
    """Turn float densities into whole counts summing to ``keep_budget`` (largest remainder method).

    Dense layers (density 1) stay exactly dense and no layer exceeds its size. Ties between equal
    remainders go to the earlier layer, so the result is deterministic.
    """
    exact = {name: min(max(densities[name], 0.0), 1.0) * numels[name] for name in numels}
    counts = {name: min(numels[name], math.floor(exact[name])) for name in numels}
    adjustable = [name for name in numels if densities[name] < 1.0]
    position = {name: index for index, name in enumerate(numels)}
    shortfall = keep_budget - sum(counts.values())
    # Float error can leave the shortfall off by more than the number of layers; loop until it is spent.
    while shortfall > 0:
        growable = [name for name in adjustable if counts[name] < numels[name]]
        if not growable:
            raise RuntimeError(f"cannot place {shortfall} more weights; every sparse layer is full.")
        growable.sort(key=lambda name: (-(exact[name] - math.floor(exact[name])), position[name]))
        for name in growable[:shortfall]:
            counts[name] += 1
        shortfall = keep_budget - sum(counts.values())
    while shortfall < 0:
        shrinkable = [name for name in adjustable if counts[name] > 0]
        if not shrinkable:
            raise RuntimeError(f"cannot remove {-shortfall} more weights; every sparse layer is empty.")
        shrinkable.sort(key=lambda name: (exact[name] - math.floor(exact[name]), position[name]))
        for name in shrinkable[:-shortfall]:
            counts[name] -= 1
        shortfall = keep_budget - sum(counts.values())
    return counts


def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def check_layer_sparsity(layer_sparsity: Mapping[str, float]) -> dict[str, float]:
    """Return ``layer_sparsity`` as a ``{pattern: float}`` dict, or raise a one-line ValueError naming the entry.

    Every value must be a number in ``[0, 1)``; NaN and infinity are refused (``not 0 <= x < 1`` holds for NaN).

    Args:
        layer_sparsity: Layer pattern -> sparsity.

    Raises:
        ValueError: If it is not a mapping, or a value is not a number in ``[0, 1)``.
    """
    if not isinstance(layer_sparsity, Mapping):
        raise ValueError(
            f"layer_sparsity must be a map of layer pattern -> sparsity in [0, 1), got {layer_sparsity!r}."
        )
    for pattern, sparsity in layer_sparsity.items():
        if not _is_real(sparsity) or not 0.0 <= sparsity < 1.0:
            raise ValueError(f"layer_sparsity['{pattern}'] must be in [0, 1), got {sparsity!r}.")
    return {str(pattern): float(sparsity) for pattern, sparsity in layer_sparsity.items()}


def _custom_counts(shapes: Mapping[str, torch.Size], layer_sparsity: Mapping[str, float]) -> dict[str, int]:
    layer_sparsity = check_layer_sparsity(layer_sparsity)

    def matches(pattern: str, name: str) -> bool:
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.removesuffix(".weight"), pattern)

    unused = [pattern for pattern in layer_sparsity if not any(matches(pattern, name) for name in shapes)]
    if unused:
        raise ValueError(
            f"layer_sparsity patterns {unused} match no layer; layers: {', '.join(list(shapes)[:8])}"
            f"{', ...' if len(shapes) > 8 else ''} ({len(shapes)} in all)."
        )
    counts: dict[str, int] = {}
    uncovered: list[str] = []
    for name, shape in shapes.items():
        pattern = next((pattern for pattern in layer_sparsity if matches(pattern, name)), None)
        if pattern is None:
            uncovered.append(name)
            continue
        counts[name] = round((1.0 - layer_sparsity[pattern]) * math.prod(shape))
    if uncovered:
        raise ValueError(f"layer_sparsity covers no pattern for layers {uncovered}; add a pattern for them (e.g. '*').")
    return counts


def check_target_sparsity(target_sparsity: float | None) -> float:
    """Return ``target_sparsity`` as a float, or raise a one-line ValueError if it is not a number in ``[0, 1)``.

    NaN and infinity are refused (the comparison is written so that NaN fails it), and so are bools and strings.
    """
    if not _is_real(target_sparsity) or not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}.")
    return float(target_sparsity)


def layer_keep_counts(
    distribution: str,
    shapes: Mapping[str, torch.Size],
    target_sparsity: float | None,
    *,
    layer_sparsity: Mapping[str, float] | None = None,
    first_layer: str | None = None,
    last_layer: str | None = None,
    erk_power_scale: float = 1.0,
) -> dict[str, int]:
    """Exact number of weights to keep in each layer.

    For a registered distribution the counts sum to exactly ``round((1 - target_sparsity) * total)``:
    the distribution solves for float densities that spend this budget and a largest-remainder
    apportionment (ties to the earlier layer) turns them into whole weights, keeping dense layers dense.

    Args:
        distribution: A registered name (``uniform``, ``uniform_plus``, ``er``, ``erk``, ``erk_plus``) or
            ``custom``.
        shapes: Layer name to weight shape, in parameter order.
        target_sparsity: Global fraction of weights to prune, in ``[0, 1)``. Ignored (may be ``None``) for
            ``custom``.
        layer_sparsity: For ``custom`` only: glob pattern or exact name -> sparsity in ``[0, 1)``. Patterns
            match the full name or the module name (without ``.weight``); the first matching pattern wins.
            Each layer keeps ``round((1 - sparsity) * numel)`` weights.
        first_layer: The layer ``uniform_plus`` keeps dense; defaults to the first name in ``shapes``.
        last_layer: The classifier, which ``uniform_plus`` keeps at least 20% dense and ``erk_plus`` keeps
            dense; defaults to the last name in ``shapes``.
        erk_power_scale: Exponent on the raw ERK density (``erk``, ``erk_plus``).

    Raises:
        ValueError: On an unknown distribution, a ``target_sparsity`` outside ``[0, 1)``, an empty or
            zero-size shape, an unknown ``first_layer``/``last_layer``, a budget the distribution cannot
            reach, or a ``layer_sparsity`` map that leaves a layer uncovered, has an unused pattern or is
            given for a distribution other than ``custom``.
    """
    if distribution != CUSTOM and distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution '{distribution}'; known distributions: {known_distributions()}")
    if len(shapes) == 0:
        raise ValueError("layer_keep_counts needs at least one layer, got no shapes.")
    numels = _numels(shapes)
    empty = [name for name, numel in numels.items() if numel == 0]
    if empty:
        raise ValueError(f"layers {empty} have no weights; leave them out of the prunable set.")

    if distribution == CUSTOM:
        if layer_sparsity is None:
            raise ValueError("distribution 'custom' needs layer_sparsity (a map of layer pattern -> sparsity).")
        return _custom_counts(shapes, layer_sparsity)
    if layer_sparsity is not None:
        raise ValueError(f"layer_sparsity applies only to distribution 'custom', got distribution '{distribution}'.")
    target_sparsity = check_target_sparsity(target_sparsity)
    if not _is_real(erk_power_scale) or not 0 <= erk_power_scale < math.inf:
        raise ValueError(f"erk_power_scale must be a finite number >= 0, got {erk_power_scale}.")
    names = list(shapes)
    first_layer = names[0] if first_layer is None else first_layer
    last_layer = names[-1] if last_layer is None else last_layer
    for argument, layer in (("first_layer", first_layer), ("last_layer", last_layer)):
        if layer not in shapes:
            raise ValueError(f"{argument} '{layer}' is not one of the layers: {', '.join(names)}.")

    total = sum(numels.values())
    keep_budget = round((1.0 - target_sparsity) * total)
    densities = DISTRIBUTIONS[distribution](
        shapes,
        keep_budget,
        first_layer=first_layer,
        last_layer=last_layer,
        erk_power_scale=erk_power_scale,
    )
    return _apportion(densities, numels, keep_budget)


def layer_densities(
    distribution: str, shapes: Mapping[str, torch.Size], target_sparsity: float | None, **options: Any
) -> dict[str, float]:
    """Achieved density of each layer, ``counts / numel`` from :func:`layer_keep_counts` (for plotting).

    Args:
        distribution: See :func:`layer_keep_counts`.
        shapes: See :func:`layer_keep_counts`.
        target_sparsity: See :func:`layer_keep_counts`.
        **options: The keyword options of :func:`layer_keep_counts` (``layer_sparsity``, ``first_layer``,
            ``last_layer``, ``erk_power_scale``).

    Raises:
        ValueError: As :func:`layer_keep_counts`.
    """
    counts = layer_keep_counts(distribution, shapes, target_sparsity, **options)
    return {name: counts[name] / math.prod(shape) for name, shape in shapes.items()}
