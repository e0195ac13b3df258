"""What an Early-Bird ticket ranks and prunes: BatchNorm channels (the paper) or unstructured weights (a variant).

From You et al. 2020, "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks"
(https://arxiv.org/abs/1909.11957). The authors' code (GATECH-EIC/Early-Bird-Tickets, ``main.py``) takes, before
every epoch, the channel mask that prunes the ``target_sparsity`` share of channels with the smallest BatchNorm
``|γ|`` over all BatchNorm layers; ``resprune.py`` then removes those channels. :class:`TicketMasks` computes that
mask and the parameter masks that prune it; the schedule (when the ticket is drawn) lives in
:class:`~pruning_callbacks.engine.tracking.EarlyBirdTracker`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from pruning_callbacks.engine.channels import (
    ChannelGroup,
    bn_scales,
    channel_groups,
    channel_masked_parameters,
    channel_masks,
    check_channel_budget,
    expand_channel_masks,
)
from pruning_callbacks.engine.checks import check_choice, check_int
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.recipes import MaskRecipe
from pruning_callbacks.engine.scores import needs_batches

__all__ = ["CHANNEL_RANKING", "GRANULARITIES", "L1_PENALTY", "TicketMasks"]

GRANULARITIES = ("channel", "unstructured")
CHANNEL_RANKING = ("magnitude", "global", "uniform", None)
"""``(score, scope, distribution, layer_sparsity)`` of ``granularity: channel``: ``|γ|``, ranked globally."""
RANKING_OPTIONS = ("score", "scope", "distribution", "layer_sparsity")
L1_PENALTY = 1e-4
"""Network slimming's penalty on ``|γ|`` as the Early-Bird code sets it (``--s 0.0001``)."""


class TicketMasks:
    """The mask an Early-Bird ticket would be if drawn now, and the parameter masks that prune it (You et al. 2020).

    ``channel`` ranks ``|γ|`` of every BatchNorm2d globally, as the authors' code does, keeping at least
    ``min_channels_per_layer`` channels per layer. ``unstructured`` ranks the prunable weights with a data-free
    :class:`~pruning_callbacks.engine.recipes.MaskRecipe` score. Call :meth:`bind` with the model before anything else.

    Args:
        target_sparsity: Share pruned: of all ranked channels (``channel``) or of the prunable weights
            (``unstructured``), in ``[0, 1)``.
        granularity: ``channel`` (the paper) or ``unstructured`` (a variant).
        l1_penalty: Strength of the L1 penalty on ``γ``; ``None`` means ``1e-4`` for ``channel`` and 0 otherwise.
        min_channels_per_layer: Channels every BatchNorm layer keeps (``channel``); 0 allows emptying a layer.
        recipe: The ``MaskRecipe`` arguments (score, scope, distribution, layer_sparsity, iterations,
            min_weights_per_layer, input_shape); for ``channel`` they must be the defaults.

    Raises:
        ValueError: For an unknown granularity, a data-dependent score, a negative penalty, or recipe options with
            ``granularity: channel``.
    """

    def __init__(
        self,
        target_sparsity: float,
        granularity: str = "channel",
        l1_penalty: float | None = None,
        min_channels_per_layer: int = 1,
        **recipe: object,
    ) -> None:
        check_choice("granularity", granularity, GRANULARITIES)
        self.recipe = MaskRecipe(target_sparsity=target_sparsity, **recipe)  # type: ignore[arg-type]
        score = recipe.get("score", "magnitude")
        if needs_batches(score):
            raise ValueError(
                f"EarlyBird tracks data-free scores (e.g. magnitude, synflow); score '{score}' reads training batches."
            )
        defaults = zip(RANKING_OPTIONS, CHANNEL_RANKING, strict=True)
        ranking = tuple(recipe.get(name, default) for name, default in defaults)
        if granularity == "channel" and ranking != CHANNEL_RANKING:
            raise ValueError(
                "granularity 'channel' ranks BatchNorm scales globally; score, scope, distribution and layer_sparsity "
                "apply to granularity 'unstructured' only."
            )
        if l1_penalty is None:
            l1_penalty = L1_PENALTY if granularity == "channel" else 0.0
        if isinstance(l1_penalty, bool) or not isinstance(l1_penalty, (int, float)) or not 0 <= l1_penalty < math.inf:
            raise ValueError(f"l1_penalty must be a finite number >= 0, got {l1_penalty!r}.")
        check_int("min_channels_per_layer", min_channels_per_layer, 0)
        self.target_sparsity = float(target_sparsity)
        self.granularity = granularity
        self.l1_penalty = float(l1_penalty)
        self.min_channels_per_layer = min_channels_per_layer
        self.groups: list[ChannelGroup] = []
        self.tracked: dict[str, nn.Parameter] = {}
        self.params: dict[str, nn.Parameter] = {}
        """The parameters the ticket masks: every parameter a pruned channel touches, or the tracked weights."""
        self.scales: list[nn.Parameter] = []
        """The BatchNorm scales ``γ`` the L1 penalty acts on."""

    def bind(self, module: nn.Module, include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
        """Find what ``module`` ranks: its BatchNorm channel groups, or its prunable weights.

        Raises:
            ValueError: For a model without BatchNorm layers, one ``torch.fx`` cannot trace, or a channel budget
                that cannot keep ``min_channels_per_layer`` (``channel``); for an infeasible recipe or a missing
                input shape (``unstructured``).
        """
        if self.granularity == "channel":
            self.groups = channel_groups(module, include, exclude)
            check_channel_budget(module, self.groups, self.target_sparsity, self.min_channels_per_layer)
            self.params = channel_masked_parameters(module, self.groups)
            self.scales = [module.get_submodule(group.bn).weight for group in self.groups]
            return
        self.tracked = prunable_parameters(module, include, exclude)
        self.params = self.tracked
        self.recipe.check_feasible({name: param.numel() for name, param in self.tracked.items()})
        if self.recipe.needs_input_shape and getattr(module, "example_input_array", None) is None:
            raise ValueError(
                f"EarlyBird with score '{self.recipe.score}' reads no batches, so it needs input_shape "
                "(e.g. [3, 32, 32]) or the module's example_input_array."
            )
        self.scales = [child.weight for child in module.modules() if isinstance(child, nn.BatchNorm2d)]

    def current(self, module: nn.Module, seed: int, key: str) -> Masks:
        """The mask the ticket would be if drawn now: channel masks (keyed ``<bn>.weight``) or weight masks."""
        if self.granularity == "channel":
            return channel_masks(bn_scales(module, self.groups), self.target_sparsity, self.min_channels_per_layer)
        return self.recipe.masks(self.tracked, seed=seed, key=key, module=module)

    def prune(self, module: nn.Module, ticket: Masks) -> Masks:
        """The masks over :attr:`params` that prune ``ticket``."""
        if self.granularity == "unstructured":
            return ticket
        expanded = expand_channel_masks(module, self.groups, ticket)
        dense = Masks.dense(self.params)
        return Masks({name: expanded.get(name, dense[name]) for name in self.params})
