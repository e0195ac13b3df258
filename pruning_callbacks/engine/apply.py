"""Keeping pruned weights at exactly zero during training.

Masks are applied in place with one ``torch._foreach_mul_`` over all masked weights right after each optimizer
step, and the same is done to the optimizer state that has the weights' shape (SGD momentum, Adam moments), so a
pruned weight neither moves nor carries momentum. There are no forward pre-hooks and no ``weight_orig`` /
``weight_mask`` re-parametrization: the forward pass runs on plain dense parameters, and the model's ``state_dict``
stays a plain ``state_dict`` with zeros in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from pruning_callbacks.engine.masks import Masks


class MaskApplier:
    """Applies a fixed set of masks to parameters and optimizer state, in place.

    The masks are converted once to each parameter's dtype, device and memory format, so that the per-step work is
    two fused multiplies and nothing else: no allocation, no host synchronization.

    Args:
        params: The prunable parameters by full name.
        masks: Masks with the same names and shapes.

    Raises:
        ValueError: If the masks do not fit the parameters.
    """

    def __init__(self, params: Mapping[str, nn.Parameter], masks: Masks) -> None:
        masks.check_compatible({name: p.shape for name, p in params.items()})
        self.params: list[Tensor] = [params[name] for name in masks]
        # empty_like keeps the parameter's strides (channels_last) so the multiply is a plain elementwise loop.
        self.factors: list[Tensor] = [
            torch.empty_like(p).copy_(masks[name]) for name, p in zip(masks, self.params, strict=True)
        ]
        self._state_cache: tuple[tuple[int, int], list[Tensor], list[Tensor]] | None = None

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero the pruned weights in place."""
        torch._foreach_mul_(self.params, self.factors)

    @torch.no_grad()
    def mask_optimizer_state_(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the optimizer state of pruned weights (every state tensor shaped like its parameter)."""
        states, factors = self._optimizer_state(optimizer)
        if states:
            torch._foreach_mul_(states, factors)

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Re-apply the masks after every step of ``optimizer``.

        A step post-hook fires only when the optimizer really steps: under gradient accumulation it fires once per
        accumulated step, and under ``16-mixed`` a step that the gradient scaler skips leaves everything as it was.

        Args:
            optimizer: The optimizer that updates the masked parameters.

        Returns:
            A handle whose ``remove()`` detaches the hook.
        """

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.apply_()
            self.mask_optimizer_state_(opt)

        return optimizer.register_step_post_hook(hook)

    def _optimizer_state(self, optimizer: torch.optim.Optimizer) -> tuple[list[Tensor], list[Tensor]]:
        # The state tensors are created lazily by the first step and replaced when a checkpoint is loaded, so the
        # lists are rebuilt whenever the optimizer or the number of parameters with state changes.
        key = (id(optimizer), len(optimizer.state))
        if self._state_cache is None or self._state_cache[0] != key:
            states: list[Tensor] = []
            factors: list[Tensor] = []
            for param, factor in zip(self.params, self.factors, strict=True):
                for value in optimizer.state.get(param, {}).values():
                    if isinstance(value, Tensor) and value.shape == param.shape:
                        states.append(value)
                        factors.append(factor if value.dtype == factor.dtype else factor.to(value.dtype))
            self._state_cache = (key, states, factors)
        return self._state_cache[1], self._state_cache[2]
