"""Gradient flow through the weights a mask keeps (torch only): what ``GradientNormMonitor`` logs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def effective_grad_norm(params: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
    """L2 norm of the gradients of the weights that a mask keeps, over all parameters together.

    ``sqrt(sum_l ||grad_l * mask_l||^2)``: the gradient flow through the remaining connections, which Wang et al.
    2020 use to compare pruning at initialization methods ("Picking Winning Tickets Before Training by Preserving
    Gradient Flow", https://arxiv.org/abs/2002.07376; see also Evci et al. 2022, "Gradient Flow in Sparse Neural
    Networks and How Lottery Tickets Win", https://arxiv.org/abs/2010.03533). A parameter without a mask counts as
    dense; one without a gradient is skipped. One fused ``torch._foreach_norm``, no host sync.

    Args:
        params: Parameters (or any tensors with ``.grad``) by name.
        masks: Name to keep-mask (bool or 0/1) of the parameter's shape, for some or all of ``params``; ``None``
            means every weight is kept.

    Returns:
        A float32 scalar tensor on the parameters' device (zero when no parameter has a gradient).

    Raises:
        ValueError: If ``params`` is empty, or a mask names no parameter or has the wrong shape.
    """
    if len(params) == 0:
        raise ValueError("`params` must hold at least one parameter, got an empty mapping.")
    masks = masks or {}
    unknown = [name for name in masks if name not in params]
    if unknown:
        raise ValueError(f"masks name parameters that are not in `params`: {', '.join(unknown[:8])}.")
    gradients: list[Tensor] = []
    for name, param in params.items():
        grad = param.grad
        if grad is None:
            continue
        mask = masks.get(name)
        if mask is not None:
            if mask.shape != grad.shape:
                raise ValueError(f"mask '{name}' has shape {tuple(mask.shape)}, its parameter {tuple(grad.shape)}.")
            grad = grad * mask
        gradients.append(grad.detach())
    if not gradients:
        return torch.zeros((), device=next(iter(params.values())).device)
    norms = torch._foreach_norm(gradients, 2)
    return torch.linalg.vector_norm(torch.stack([norm.float() for norm in norms]))
