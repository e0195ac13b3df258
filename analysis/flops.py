"""Forward FLOPs of a model and of its sparse version, and training FLOPs per sample.

Counts come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix products of a forward
pass (convolutions, ``mm``/``addmm``/``bmm``, attention) and counts **a multiply-add as 2 FLOPs**. Element-wise work
(BatchNorm, ReLU, residual additions, pooling) is not counted; for a CIFAR ResNet18 it is well under 1% of the
total. At ``width=64`` the network costs 1,110,845,440 FLOPs per ``3 × 32 × 32`` image (555,422,720 multiply-adds).

Sparse and training FLOPs follow the accounting of Evci et al. 2020, "Rigging the Lottery: Making All Tickets
Winners" (RigL, https://arxiv.org/abs/1911.11134, appendix H):

* a sparse layer costs its dense FLOPs times its density (:func:`sparse_forward_flops`);
* one training step of one sample costs three forward passes, one for the forward and two for the backward
  (gradients with respect to the activations and to the weights);
* RigL adds a dense gradient every ``update_every`` steps; SET and static sparse training cost the same as a sparse
  forward-backward (SET's random growth needs no dense gradient).

The training formulas live with the methods, in ``MaskedTraining.training_flops_per_sample`` and RigL's override;
:class:`analysis.summary.RunSummary` applies them epoch by epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

_COUNTED_MODULES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class FlopCount:
    """Dense forward FLOPs of one image (a multiply-add counts 2).

    Attributes:
        total: FLOPs of the whole model's forward pass.
        per_weight: Full parameter name of each Conv/Linear weight (``layer1.0.conv1.weight``, as in
            ``named_parameters()``) to the forward FLOPs of its layer. A layer called twice counts twice.
    """

    total: int
    per_weight: dict[str, int] = field(default_factory=dict)


def _weight_names(model: nn.Module) -> dict[nn.Module, str]:
    """Each Conv/Linear module to the full name of its weight, as ``named_parameters()`` names it."""
    names: dict[nn.Module, str] = {}
    by_weight: dict[int, str] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, _COUNTED_MODULES) and isinstance(module.weight, Tensor):
            # A weight tied between layers is listed once by named_parameters(), under its first name.
            name = f"{module_name}.weight" if module_name else "weight"
            names[module] = by_weight.setdefault(id(module.weight), name)
    return names


def layer_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> FlopCount:
    """Count the dense forward FLOPs of ``model`` per image, in total and per Conv/Linear weight.

    The forward pass runs once on zeros of ``input_shape`` on the model's device and dtype, in eval mode and under
    ``torch.no_grad()``; each module's training flag is restored afterwards, so this is safe in the middle of
    training. Works for plain modules and LightningModules (whose ``forward`` takes the image batch).

    Args:
        model: The model; its forward must take one tensor of ``input_shape``.
        input_shape: Shape of the dummy input, batch first. The counts are divided by the batch size.

    Returns:
        Total FLOPs and FLOPs per Conv/Linear weight, per image.

    Raises:
        ValueError: If ``input_shape`` has no batch dimension or a non-positive size.
    """
    shape = tuple(int(size) for size in input_shape)
    if len(shape) < 2 or any(size < 1 for size in shape):
        raise ValueError(f"input_shape must be (batch, ...) with positive sizes, got {tuple(input_shape)}")
    batch_size = shape[0]
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32

    names = _weight_names(model)
    per_weight = dict.fromkeys(names.values(), 0)
    counter = FlopCounterMode(display=False)
    started: dict[nn.Module, int] = {}

    # The counter is live: FLOPs between a layer's pre-hook and its hook are that layer's, whatever its name.
    def before(module: nn.Module, args: object) -> None:
        started[module] = counter.get_total_flops()

    def after(module: nn.Module, args: object, output: object) -> None:
        per_weight[names[module]] += counter.get_total_flops() - started.pop(module)

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    training_flags = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in training_flags.items():
            module.training = training
    return FlopCount(
        total=counter.get_total_flops() // batch_size,
        per_weight={name: flops // batch_size for name, flops in per_weight.items()},
    )


def sparse_forward_flops(count: FlopCount, densities: Mapping[str, float]) -> float:
    """Forward FLOPs per image when each layer computes only its kept weights.

    ``total - Σ_l (1 - density_l) · per_weight[l]``: RigL's accounting (https://arxiv.org/abs/1911.11134,
    appendix H), in which a layer at density ``d`` costs ``d`` times its dense FLOPs. Layers missing from
    ``densities`` count as dense.

    Args:
        count: Dense FLOPs from :func:`layer_flops`.
        densities: Full weight name to the fraction of its weights kept, in ``[0, 1]``.

    Raises:
        ValueError: If a name is not a counted weight or a density is outside ``[0, 1]``.
    """
    saved = 0.0
    for name, density in densities.items():
        if name not in count.per_weight:
            known = ", ".join(list(count.per_weight)[:8])
            raise ValueError(f"no FLOPs counted for '{name}'; counted weights include: {known}")
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"density of '{name}' must be in [0, 1], got {density}")
        saved += (1.0 - density) * count.per_weight[name]
    return count.total - saved
