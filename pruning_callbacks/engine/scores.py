"""Importance scores: one function per method, registered by name.

A score function takes a :class:`ScoreContext` and returns one float tensor per prunable parameter, of
the parameter's shape; higher means more important. Selection (:mod:`pruning_callbacks.engine.selection`) then
keeps the highest-scoring weights among those still alive. A new method is added by writing one function
and decorating it with :func:`register_score`.

Registered here: ``magnitude``, ``random``, and the gradient scores of pruning at initialization, ``snip`` (Lee et al.
2019), ``grasp`` (Wang et al. 2020) and ``synflow`` (Tanaka et al. 2020). ``snip`` and ``grasp`` read training
batches (``register_score(..., needs_batches=True)``); the iterative SynFlow schedule and the per-layer floors live
in :mod:`pruning_callbacks.engine.recipes`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pruning_callbacks.engine.masks import Masks


@dataclass(frozen=True)
class ScoreContext:
    """Everything a score function may look at.

    Attributes:
        params: Prunable weights by full name, already masked (pruned weights are 0).
        masks: The current masks.
        seed: Seed for any randomness, already derived from (run seed, step or round) by the caller, so
            every rank draws the same numbers.
        module: The whole model, for gradient-based scores (SNIP, GraSP, SynFlow). Its parameter names must
            be the keys of ``params``.
        batches: Training batches ``(inputs, targets)`` for data-dependent scores, already on the device and
            transformed as training transforms them.
        options: Method options by name, e.g. ``temperature`` (GraSP) or ``input_shape`` (SynFlow).
        reduce_mean: Averages a list of tensors over DDP ranks (one collective) and returns them; ``None`` on
            a single process. Data-dependent scores average their gradients with it, so every rank computes the
            scores of all ranks' batches together.
        grads: Dense gradients by full name (``None`` where a weight got no gradient), read after DDP reduced
            them: what the ``gradient`` score (RigL's growth criterion) ranks.
    """

    params: Mapping[str, Tensor]
    masks: Masks
    seed: int
    module: nn.Module | None = None
    batches: Sequence[tuple[Tensor, Tensor]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    reduce_mean: Callable[[Sequence[Tensor]], list[Tensor]] | None = None
    grads: Mapping[str, Tensor | None] | None = None


ScoreFn = Callable[[ScoreContext], dict[str, Tensor]]

SCORES: dict[str, ScoreFn] = {}

BATCH_SCORES: set[str] = set()
"""Names of the registered scores that need ``ScoreContext.batches`` (data-dependent scores)."""


def register_score(name: str, *, needs_batches: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator that registers a score function under ``name``.

    Args:
        name: The name configs use to pick the score.
        needs_batches: Whether the score reads training batches (``ScoreContext.batches``); callbacks fetch them
            only for such scores.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    if name in SCORES:
        raise ValueError(f"score '{name}' is already registered; known scores: {', '.join(sorted(SCORES))}")

    def decorator(score_fn: ScoreFn) -> ScoreFn:
        SCORES[name] = score_fn
        if needs_batches:
            BATCH_SCORES.add(name)
        return score_fn

    return decorator


def needs_batches(name: str) -> bool:
    """Whether the registered score ``name`` reads training batches.

    Raises:
        ValueError: If ``name`` is not registered, listing the known names.
    """
    get_score(name)
    return name in BATCH_SCORES


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


@register_score("gradient")
def gradient_scores(context: ScoreContext) -> dict[str, Tensor]:
    """``|dense gradient|``: RigL's growth criterion (Evci et al. 2020, https://arxiv.org/abs/1911.11134).

    Args:
        context: Uses ``context.grads``; a weight without a gradient scores 0 everywhere.

    Raises:
        ValueError: If ``context.grads`` is ``None``.
    """
    if context.grads is None:
        raise ValueError("score 'gradient' needs the dense gradients (context.grads), got None.")
    scores: dict[str, Tensor] = {}
    for name, param in context.params.items():
        grad = context.grads.get(name)
        scores[name] = torch.zeros_like(param, dtype=torch.float32) if grad is None else grad.detach().abs()
    return scores


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


# ---------------------------------------------------------------------------------------------------------------------
# Gradient scores for pruning at initialization. They run the model through ``torch.func.functional_call`` with
# stand-in tensors for the prunable weights (and copies of the buffers), and take gradients with
# ``torch.autograd.grad``: the model's parameters, buffers and ``.grad`` are never touched, and every module's
# train/eval mode is restored afterwards.

GRASP_TEMPERATURE = 200.0
"""GraSP's softmax temperature (Wang et al. 2020, https://arxiv.org/abs/2002.07376, section 5)."""

BN_MODES = ("eval", "train")
"""The mode the model is scored in: ``eval`` (BatchNorm normalizes with its running statistics) or ``train`` (with
the batch's statistics). Set through ``ScoreContext.options["bn_mode"]``."""

DEFAULT_BN_MODES = {"snip": "eval", "grasp": "train"}
"""Each data-dependent score's default mode, that of its reference code: SNIP in eval mode as the Synaptic-Flow
code scores it (``prune.py``, ``model.eval()`` unless ``train_mode``), GraSP in train mode as its authors' code
does (``alecwangcq/GraSP``, ``pruner/GraSP.py``)."""


def bn_mode_of(name: str, options: Mapping[str, Any]) -> str:
    """The mode score ``name`` runs the model in: ``options["bn_mode"]`` if set, else the score's default.

    Raises:
        ValueError: If the mode is not one of :data:`BN_MODES`.
    """
    mode = options.get("bn_mode") or DEFAULT_BN_MODES.get(name, "train")
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {mode!r}.")
    return str(mode)


def _require_module(name: str, context: ScoreContext) -> nn.Module:
    if context.module is None:
        raise ValueError(f"score '{name}' needs the model (ScoreContext.module).")
    module_params = dict(context.module.named_parameters())
    unknown = [param_name for param_name in context.params if param_name not in module_params]
    if unknown:
        raise ValueError(
            f"score '{name}' needs ScoreContext.params keyed by the model's parameter names; unknown: {unknown[:8]}."
        )
    return context.module


def _require_batches(name: str, context: ScoreContext) -> list[tuple[Tensor, Tensor]]:
    if not context.batches:
        raise ValueError(
            f"score '{name}' is data-dependent and needs training batches (ScoreContext.batches); "
            "PruneAtInit fetches num_batches of them."
        )
    checked: list[tuple[Tensor, Tensor]] = []
    for index, batch in enumerate(context.batches):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not all(isinstance(t, Tensor) for t in batch[:2]):
            raise ValueError(f"score '{name}' needs batches of (inputs, targets) tensors; batch {index} is not.")
        checked.append((batch[0], batch[1]))
    return checked


@contextlib.contextmanager
def _scoring_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """Put every submodule in train or eval mode with gradients enabled; restore each module's own mode after."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.train(training)
    try:
        with torch.enable_grad():
            yield
    finally:
        for submodule, mode in modes:
            submodule.training = mode


def _masked_leaves(context: ScoreContext) -> dict[str, Tensor]:
    """Fresh leaf tensors ``w * m`` that stand in for the prunable weights, so no gradient reaches the model."""
    return {
        name: (param.detach() * context.masks[name].to(param.device, param.dtype)).requires_grad_()
        for name, param in context.params.items()
    }


def _buffer_copies(module: nn.Module) -> dict[str, Tensor]:
    # Train-mode BatchNorm updates its running statistics in place; it updates these copies instead.
    return {name: buffer.detach().clone() for name, buffer in module.named_buffers()}


def _gradients(output: Tensor, leaves: Mapping[str, Tensor], create_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(output, list(leaves.values()), create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(leaf) if grad is None else grad for grad, leaf in zip(grads, leaves.values(), strict=True)]


def _mean_over_ranks(context: ScoreContext, tensors: list[Tensor]) -> list[Tensor]:
    return tensors if context.reduce_mean is None else list(context.reduce_mean(tensors))


def _cross_entropy(
    module: nn.Module, tensors: Mapping[str, Tensor], batch: tuple[Tensor, Tensor], total: int, temperature: float
) -> Tensor:
    """This batch's share of the mean cross-entropy over all ``total`` samples, at softmax temperature."""
    inputs, targets = batch
    logits = functional_call(module, dict(tensors), (inputs,))
    return F.cross_entropy(logits / temperature, targets, reduction="sum") / total


@register_score("snip", needs_batches=True)
def snip_scores(context: ScoreContext) -> dict[str, Tensor]:
    """Connection sensitivity ``|∂L/∂m| = |∂L/∂w ⊙ w|`` on the training batches.

    From Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"
    (https://arxiv.org/abs/1810.02340). ``L`` is the mean cross-entropy over all samples of all batches (and, under
    DDP, of all ranks: the gradient is averaged over ranks before the absolute value). By default the model is
    scored in eval mode, BatchNorm normalizing with its running statistics, as the Synaptic-Flow reference code
    scores SNIP (``options["bn_mode"] = "train"`` uses the batch statistics instead); running statistics are left
    as they were either way. The paper's normalization by the sum of all scores does not change the ranking and is
    left out.

    Args:
        context: Uses ``module``, ``params``, ``masks`` (the weights are scored at ``w ⊙ m``), ``batches``,
            ``reduce_mean`` and ``options["bn_mode"]``.

    Raises:
        ValueError: Without a module or batches, or with an unknown ``bn_mode``.
    """
    module = _require_module("snip", context)
    batches = _require_batches("snip", context)
    total = sum(len(targets) for _, targets in batches)
    with _scoring_mode(module, training=bn_mode_of("snip", context.options) == "train"):
        leaves = _masked_leaves(context)
        tensors = {**_buffer_copies(module), **leaves}
        gradient = [torch.zeros_like(leaf) for leaf in leaves.values()]
        for batch in batches:
            loss = _cross_entropy(module, tensors, batch, total, temperature=1.0)
            torch._foreach_add_(gradient, _gradients(loss, leaves))
    gradient = _mean_over_ranks(context, gradient)
    return {name: (grad * context.params[name].detach()).abs() for name, grad in zip(leaves, gradient, strict=True)}


@register_score("grasp", needs_batches=True)
def grasp_scores(context: ScoreContext) -> dict[str, Tensor]:
    """Gradient Signal Preservation: ``θ ⊙ Hg``, the negation of GraSP's ``S(-θ) = -θ ⊙ Hg``.

    From Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving Gradient Flow"
    (https://arxiv.org/abs/2002.07376). ``g`` is the gradient of the cross-entropy of the logits divided by the
    temperature (200 by default) and ``Hg`` the Hessian-gradient product, both over the prunable weights and
    averaged over all samples of all batches (and over DDP ranks). GraSP removes the weights with the *highest*
    ``-θ ⊙ Hg``, whose removal reduces gradient flow least; the engine keeps the highest scores, so this returns
    ``θ ⊙ Hg`` and the same weights are kept. By default the model is scored in train mode, BatchNorm using the
    batch statistics, as the authors' code does (``options["bn_mode"] = "eval"`` uses the running statistics); its
    running statistics are left as they were.

    Args:
        context: Uses ``module``, ``params``, ``masks``, ``batches``, ``reduce_mean``, ``options["temperature"]``
            and ``options["bn_mode"]``.

    Raises:
        ValueError: Without a module or batches, with a temperature that is not positive, or an unknown
            ``bn_mode``.
    """
    module = _require_module("grasp", context)
    batches = _require_batches("grasp", context)
    temperature = float(context.options.get("temperature", GRASP_TEMPERATURE))
    if not temperature > 0:
        raise ValueError(f"GraSP temperature must be positive, got {temperature}.")
    total = sum(len(targets) for _, targets in batches)
    with _scoring_mode(module, training=bn_mode_of("grasp", context.options) == "train"):
        leaves = _masked_leaves(context)
        tensors = {**_buffer_copies(module), **leaves}
        gradient = [torch.zeros_like(leaf) for leaf in leaves.values()]
        for batch in batches:
            loss = _cross_entropy(module, tensors, batch, total, temperature)
            torch._foreach_add_(gradient, _gradients(loss, leaves))
        gradient = _mean_over_ranks(context, gradient)
        hessian_gradient = [torch.zeros_like(leaf) for leaf in leaves.values()]
        for batch in batches:
            loss = _cross_entropy(module, tensors, batch, total, temperature)
            grads = _gradients(loss, leaves, create_graph=True)
            gradient_dot = sum((fixed * grad).sum() for fixed, grad in zip(gradient, grads, strict=True))
            torch._foreach_add_(hessian_gradient, _gradients(gradient_dot, leaves))
    hessian_gradient = _mean_over_ranks(context, hessian_gradient)
    return {
        name: leaf.detach() * product for (name, leaf), product in zip(leaves.items(), hessian_gradient, strict=True)
    }


def _linearized(tensor: Tensor) -> Tensor:
    """``|tensor|``, in float64 if it is a floating-point tensor (SynFlow's products overflow float32)."""
    if tensor.dtype == torch.bool:
        return tensor.detach().clone()
    value = tensor.detach().abs()
    return value.to(torch.float64) if value.is_floating_point() else value


def _synflow_input_shape(context: ScoreContext) -> tuple[int, ...]:
    shape = context.options.get("input_shape")
    if shape is None and context.batches:
        shape = tuple(context.batches[0][0].shape[1:])
    if shape is None:
        example = getattr(context.module, "example_input_array", None)
        if isinstance(example, Tensor):
            shape = tuple(example.shape[1:])
    if shape is None:
        raise ValueError(
            "score 'synflow' needs the shape of one input: set input_shape (e.g. [3, 32, 32]), pass a batch, or "
            "set the module's example_input_array."
        )
    return tuple(int(size) for size in shape)


@register_score("synflow")
def synflow_scores(context: ScoreContext) -> dict[str, Tensor]:
    """Synaptic flow ``|∂R/∂θ ⊙ θ|`` with ``R = 1ᵀ (∏ |θ|) 1``: one data-free SynFlow step.

    From Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving synaptic flow"
    (https://arxiv.org/abs/2006.05467). The model runs in eval mode (BatchNorm uses its running statistics) on an
    input of ones, with every parameter and buffer replaced by its absolute value in float64 and the prunable
    weights by ``|w| ⊙ m``; the model itself is never modified, so its signs are as they were. ``R`` is a product of
    as many factors as the network is deep, so float32 overflows (or underflows to 0 at high sparsity) where
    float64 does not; the scores are divided by their maximum before they are returned as float32. The iterative
    schedule (density ``d^(k/n)`` at iteration ``k`` of ``n``) lives in
    :func:`pruning_callbacks.engine.recipes.iterative_global_prune`; this is one of its steps.

    Args:
        context: Uses ``module``, ``params``, ``masks`` and the input shape from ``options["input_shape"]``, else
            from ``batches[0]`` (only its shape), else from the module's ``example_input_array``.

    Raises:
        ValueError: Without a module or an input shape, or if ``R`` is not finite even in float64.
    """
    module = _require_module("synflow", context)
    shape = _synflow_input_shape(context)
    device = next(iter(context.params.values())).device
    with _scoring_mode(module, training=False):
        tensors = {name: _linearized(param) for name, param in module.named_parameters()}
        tensors.update({name: _linearized(buffer) for name, buffer in module.named_buffers()})
        leaves = {}
        for name, param in context.params.items():
            value = _linearized(param)
            leaves[name] = (value * context.masks[name].to(value.device, value.dtype)).requires_grad_()
        tensors.update(leaves)
        ones = torch.ones((1, *shape), dtype=torch.float64, device=device)
        flow = functional_call(module, tensors, (ones,)).sum()
        if not bool(torch.isfinite(flow)):
            raise ValueError(f"SynFlow's R = {float(flow)} is not finite even in float64; the network is too deep.")
        grads = _gradients(flow, leaves)
    scores = {name: (grad * leaf.detach()).abs() for (name, leaf), grad in zip(leaves.items(), grads, strict=True)}
    peak = float(torch.stack([score.max() for score in scores.values() if score.numel()]).max())
    if peak > 0 and math.isfinite(peak):
        scores = {name: score / peak for name, score in scores.items()}
    return scores
