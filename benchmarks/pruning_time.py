"""Time of each pruning computation on the CIFAR ResNet18, through the engine functions the callbacks call.

* ``synflow``, ``snip``, ``grasp``: :meth:`pruning_callbacks.engine.recipes.MaskRecipe.masks`, what ``PruneAtInit`` runs
  (SynFlow with its 100-iteration exponential schedule, data-free, in float64; SNIP and GraSP on one batch of random
  pixels, whose values the time does not depend on);
* ``magnitude_global``: magnitude scores and one global top-k over all prunable weights
  (:func:`~pruning_callbacks.engine.selection.prune_to_sparsity`), what a pruning round of ``IterativePruning`` runs;
* ``random_erk``: the random ERK mask that ``StaticSparse``, ``SET`` and ``RigL`` start from;
* ``rigl_update``: one RigL drop-and-grow on every layer, as ``DynamicSparseTraining`` does it at an update step:
  gradient grow scores, the finiteness check (its one host sync),
  :func:`~pruning_callbacks.engine.regrowth.drop_and_grow`, a new :class:`~pruning_callbacks.engine.apply.MaskApplier`
  zeroing weights and momentum, and the grown connections reset.

Every timing is bracketed by device synchronizations.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_modules import ResNet18Classifier
from pruning_callbacks.engine.apply import MaskApplier
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.recipes import MaskRecipe
from pruning_callbacks.engine.regrowth import drop_and_grow
from pruning_callbacks.engine.scores import ScoreContext, compute_scores
from pruning_callbacks.engine.selection import prune_to_sparsity

PRUNING_COMPUTATIONS = ("synflow", "snip", "grasp", "magnitude_global", "random_erk", "rigl_update")
RIGL_DROP_FRACTION = 0.3
"""RigL's initial drop fraction (alpha), the fraction of the first and largest update."""


@torch.no_grad()
def rigl_update(params: Mapping[str, nn.Parameter], masks: Masks, optimizer: torch.optim.Optimizer, seed: int) -> Masks:
    """One RigL update of every layer from the current gradients; returns the new masks.

    Raises:
        RuntimeError: If a grow score is not finite (RigL would skip such an update).
    """
    grads = {name: param.grad for name, param in params.items()}
    scores = compute_scores("gradient", ScoreContext(params=params, masks=masks, seed=seed, grads=grads))
    if not bool(torch.stack([torch.isfinite(score).all() for score in scores.values()]).all()):
        raise RuntimeError("non-finite RigL grow scores; the benchmark's gradients are broken.")
    regrowth = drop_and_grow(masks, params, scores, RIGL_DROP_FRACTION)
    applier = MaskApplier(params, regrowth.masks)
    applier.apply_()
    applier.mask_optimizer_state_(optimizer)
    for name, param in params.items():
        grown = regrowth.grown[name].to(param.device)
        param.masked_fill_(grown, 0.0)
        if param.grad is not None:
            param.grad.masked_fill_(grown, 0.0)
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.masked_fill_(grown, 0)
    return regrowth.masks


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pruning(settings: Any, device: torch.device) -> dict[str, Any]:
    """Time every pruning computation ``prune_repeats`` times (the median is reported) at ``prune_width``."""
    torch.manual_seed(0)
    model = ResNet18Classifier(width=settings.prune_width, channels_last=settings.channels_last).to(device)
    model.configure_model()
    params = prunable_parameters(model)
    generator = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(settings.prune_batch_size, 3, 32, 32, generator=generator).to(device),
        torch.randint(0, 10, (settings.prune_batch_size,), generator=generator).to(device),
    )
    sparsity = settings.sparsity
    dense = Masks.dense(params)

    def recipe(method: str) -> Callable[[], Masks]:
        if method == "synflow":
            iterations = settings.synflow_iterations
            synflow = MaskRecipe(sparsity, "synflow", "global", iterations=iterations, input_shape=(3, 32, 32))
            return lambda: synflow.masks(params, seed=0, module=model)
        gradient = MaskRecipe(sparsity, method, "global")
        return lambda: gradient.masks(params, seed=0, module=model, batches=[batch])

    def magnitude_global() -> Masks:
        scores = compute_scores("magnitude", ScoreContext(params=params, masks=dense, seed=0))
        return prune_to_sparsity(scores, dense, sparsity, scope="global")

    def random_erk() -> Masks:
        scores = compute_scores("random", ScoreContext(params=params, masks=dense, seed=0))
        return prune_to_sparsity(scores, dense, sparsity, scope="layerwise", distribution="erk")

    # RigL reads the dense gradients and the momentum of a sparse network in training: make both with one step.
    optimizer = model.configure_optimizers()["optimizer"]
    start_masks = random_erk().to(device)
    MaskApplier(params, start_masks).apply_()
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        optimizer.step()

    computations: dict[str, Callable[[], Masks]] = {
        "synflow": recipe("synflow"),
        "snip": recipe("snip"),
        "grasp": recipe("grasp"),
        "magnitude_global": magnitude_global,
        "random_erk": random_erk,
        "rigl_update": lambda: rigl_update(params, start_masks, optimizer, seed=0),
    }
    # Warm up kernels (first calls allocate and pick algorithms) so that the first computation timed is not penalized.
    recipe("snip")()
    MaskRecipe(sparsity, "synflow", "global", iterations=1, input_shape=(3, 32, 32)).masks(params, seed=0, module=model)
    results: dict[str, Any] = {}
    for name in PRUNING_COMPUTATIONS:
        runs = []
        for _ in range(settings.prune_repeats):
            _synchronize(device)
            start = time.perf_counter()
            masks = computations[name]()
            _synchronize(device)
            runs.append(time.perf_counter() - start)
        results[name] = {"seconds": statistics.median(runs), "sparsity": masks.sparsity()}
    return {
        "width": settings.prune_width,
        "batch_size": settings.prune_batch_size,
        "synflow_iterations": settings.synflow_iterations,
        "target_sparsity": sparsity,
        "prunable_weights": sum(param.numel() for param in params.values()),
        "repeats": settings.prune_repeats,
        "computations": results,
    }
