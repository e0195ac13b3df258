"""Channel masks from BatchNorm scaling factors: the structured side of the engine (torch only).

Network slimming (Liu et al. 2017, https://arxiv.org/abs/1708.06519) and Early-Bird tickets (You et al. 2020,
https://arxiv.org/abs/1909.11957) rank the channels of a convolutional network by the magnitude of their BatchNorm
scale ``|γ|``, trained under an L1 penalty, and prune the channels with the smallest ``|γ|`` globally.

* :func:`channel_groups` finds, by tracing the model with ``torch.fx``, every BatchNorm2d, the convolution that
  feeds it (whose output channels it normalizes) and the convolutions that read only its activated output. A
  BatchNorm whose output reaches a residual addition has no such readers: it sits on the residual stream.
* :func:`channel_masks` selects, over all ranked BatchNorm layers at once, exactly ``round(sparsity × channels)``
  channels to prune (ties broken by position, as in :func:`~pruning_callbacks.engine.selection.select_global`).
* :func:`expand_channel_masks` turns channel masks into parameter masks for the mask applier: a pruned channel's
  producing convolution output (and bias), its BatchNorm ``γ`` and ``β``, and, where the channel is internal to a
  block, the readers' input channel. With ``γ = β = 0`` the BatchNorm outputs exactly 0 for that channel, so the
  network is the slimmed one. A pruned residual-stream channel is zeroed in that branch but still carried by the
  shortcut, as in the Early-Bird code (``resprune.py`` keeps residual-stream channels and only zeroes them).
* :func:`filter_l1_norms` and :func:`layer_channel_masks` are the filter score and per-layer rule of Li et al. 2017
  (https://arxiv.org/abs/1608.08710); :func:`residual_streams` and :func:`stream_channel_masks` prune the channels of
  a residual stream together, so that they can be removed from the network.
* :func:`add_l1_subgradient_` adds the penalty's subgradient ``λ · sign(γ)`` to the scales' gradients.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx
from torch import Tensor, nn

from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.selection import select_global_with_floor, select_layerwise

# Modules and functions a channel passes through unchanged, channel for channel.
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Dropout,
    nn.Identity,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    torch.nn.functional.relu,
    torch.nn.functional.relu6,
    torch.nn.functional.leaky_relu,
    torch.nn.functional.elu,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.nn.functional.hardswish,
    torch.nn.functional.dropout,
}


@dataclass(frozen=True)
class ChannelGroup:
    """A BatchNorm layer and the convolutions its channels belong to.

    Attributes:
        bn: Module name of the ``BatchNorm2d``.
        producer: Module name of the ``Conv2d`` whose output it normalizes, or ``None``.
        consumers: Module names of the ``Conv2d`` layers that read only this layer's (activated) output; empty when
            the output also reaches anything else, a residual addition for instance.
    """

    bn: str
    producer: str | None
    consumers: tuple[str, ...]

    @property
    def key(self) -> str:
        """The name the group's channel mask is kept under: the full name of its ``γ`` (``<bn>.weight``)."""
        return f"{self.bn}.weight"

    @property
    def inner(self) -> bool:
        """Whether the channels are internal to a block (readers known, no residual addition)."""
        return bool(self.consumers)


def _readers(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> tuple[str, ...] | None:
    """Conv2d modules reached from ``node`` through elementwise ops only; ``None`` if anything else reads it."""
    readers: list[str] = []
    for user in node.users:
        if user.op == "call_module":
            module = modules[str(user.target)]
            if isinstance(module, nn.Conv2d) and module.groups == 1 and user.args[0] is node:
                readers.append(str(user.target))
                continue
            if isinstance(module, _ELEMENTWISE_MODULES):
                further = _readers(user, modules)
                if further is None:
                    return None
                readers.extend(further)
                continue
        elif user.op == "call_function" and user.target in _ELEMENTWISE_FUNCTIONS and user.args[0] is node:
            further = _readers(user, modules)
            if further is None:
                return None
            readers.extend(further)
            continue
        return None
    return tuple(dict.fromkeys(readers))


def _selected(name: str, include: Sequence[str] | None, exclude: Sequence[str] | None) -> bool:
    if include is not None and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return False
    return not (exclude is not None and any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude))


def channel_groups(
    model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> list[ChannelGroup]:
    """Every ``BatchNorm2d`` of ``model`` (in execution order) with its producing and reading convolutions.

    Args:
        model: A model that ``torch.fx.symbolic_trace`` can trace.
        include: Glob patterns of BatchNorm module names to rank; ``None`` means all.
        exclude: Glob patterns of BatchNorm module names to leave out.

    Raises:
        ValueError: If the model cannot be traced, a pattern matches no BatchNorm layer, or none is selected.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # tracing fails in many ways (control flow on tensors, unsupported calls)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"channel pruning finds each BatchNorm's convolutions by tracing the model with torch.fx, which failed: "
            f"{first}"
        ) from None
    modules = dict(model.named_modules())
    all_bns: list[str] = []
    groups: list[ChannelGroup] = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[str(node.target)], nn.BatchNorm2d):
            continue
        name = str(node.target)
        all_bns.append(name)
        if not _selected(name, include, exclude):
            continue
        source = node.args[0] if node.args else None
        producer = None
        if isinstance(source, torch.fx.Node) and source.op == "call_module":
            conv = modules[str(source.target)]
            if isinstance(conv, nn.Conv2d) and conv.groups == 1 and len(source.users) == 1:
                producer = str(source.target)
        consumers = _readers(node, modules) or ()
        groups.append(ChannelGroup(name, producer, consumers))
    for argument, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns or ():
            if not any(fnmatch.fnmatchcase(name, pattern) for name in all_bns):
                raise ValueError(
                    f"{argument} pattern {pattern!r} matches no BatchNorm2d layer; the layers are: "
                    f"{', '.join(all_bns[:8])}{', ...' if len(all_bns) > 8 else ''}"
                )
    if not groups:
        raise ValueError("channel pruning needs BatchNorm2d layers to rank, and the model has none selected")
    return groups


def bn_scales(model: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, Tensor]:
    """``|γ|`` of each group's BatchNorm, detached, keyed by :attr:`ChannelGroup.key`."""
    return {group.key: model.get_submodule(group.bn).weight.detach().abs() for group in groups}


def channel_masks(scales: Mapping[str, Tensor], sparsity: float, min_channels_per_layer: int = 1) -> Masks:
    """Keep the channels with the largest scales, globally over all layers, pruning exactly a ``sparsity`` share.

    The global ``|γ|`` ranking of network slimming and Early-Bird (``EarlyBird.pruning`` in the authors' ``main.py``
    thresholds at the ``int(total × percent)``-th smallest ``|γ|`` and keeps what is strictly greater); here exactly
    ``round(sparsity × total)`` channels are pruned, ties broken by position, and each layer keeps at least
    ``min_channels_per_layer`` channels.

    Args:
        scales: Key (``<bn>.weight``) to the layer's ``|γ|``.
        sparsity: Fraction of all channels to prune, in ``[0, 1)``.
        min_channels_per_layer: Channels every layer keeps; 0 allows emptying a layer.

    Raises:
        ValueError: If ``sparsity`` is out of range or the floor cannot be met.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"channel sparsity must be in [0, 1), got {sparsity!r}")
    dense = Masks.dense(scales)
    keep = dense.total - round(sparsity * dense.total)
    return select_global_with_floor(scales, dense, keep, min_channels_per_layer)


def expand_channel_masks(
    model: nn.Module, groups: Sequence[ChannelGroup], masks: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Parameter masks (full parameter name -> bool tensor) that prune the channels ``masks`` drop.

    For each group, a pruned channel ``c`` zeroes: the producer's ``weight[c]`` (and ``bias[c]``), the BatchNorm's
    ``weight[c]`` and ``bias[c]``, and, for an inner group, every consumer's ``weight[:, c]``. Parameters that no
    group touches are not in the result.

    Args:
        model: The model the groups were found in.
        groups: From :func:`channel_groups`.
        masks: Channel masks keyed by :attr:`ChannelGroup.key`.
    """
    result: dict[str, Tensor] = {}

    def restrict(name: str, param: Tensor, keep: Tensor, dim: int) -> None:
        shape = [1] * param.dim()
        shape[dim] = -1
        factor = keep.to(param.device).view(shape).expand_as(param)
        result[name] = result[name] & factor if name in result else factor.clone()

    for group in groups:
        keep = masks[group.key].to(torch.bool)
        bn = model.get_submodule(group.bn)
        restrict(f"{group.bn}.weight", bn.weight, keep, 0)
        restrict(f"{group.bn}.bias", bn.bias, keep, 0)
        if group.producer is not None:
            conv = model.get_submodule(group.producer)
            restrict(f"{group.producer}.weight", conv.weight, keep, 0)
            if conv.bias is not None:
                restrict(f"{group.producer}.bias", conv.bias, keep, 0)
        for consumer in group.consumers:
            restrict(f"{consumer}.weight", model.get_submodule(consumer).weight, keep, 1)
    return result


@torch.no_grad()
def add_l1_subgradient_(weights: Sequence[Tensor], strength: float) -> None:
    """Add ``strength · sign(w)`` to each weight's gradient, in place (the subgradient of ``strength · Σ|w|``).

    The sparsity penalty of network slimming as the Early-Bird code applies it (``updateBN`` in ``main.py``: after
    the backward pass, before the optimizer step). Weights without a gradient are skipped.

    Args:
        weights: The BatchNorm scales ``γ``.
        strength: The penalty ``λ``; 0 does nothing.
    """
    if strength == 0:
        return
    with_grad = [weight for weight in weights if weight.grad is not None]
    if with_grad:
        grads = [weight.grad for weight in with_grad]
        torch._foreach_add_(grads, torch._foreach_sign(with_grad), alpha=strength)


def filter_l1_norms(model: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, Tensor]:
    """The L1 norm ``Σ|W|`` of each filter of every group's producing convolution, keyed by :attr:`ChannelGroup.key`.

    The filter score of Li et al. 2017, "Pruning Filters for Efficient ConvNets" (https://arxiv.org/abs/1608.08710,
    section 3.1; ``np.sum(abs(weight), axis=(1, 2, 3))`` in the reference code's ``res56prune.py``).

    Raises:
        ValueError: If a group has no producing convolution.
    """
    norms = {}
    for group in groups:
        if group.producer is None:
            raise ValueError(
                f"BatchNorm {group.bn} is not fed by a convolution of its own, so its filters have no norm"
            )
        weight = model.get_submodule(group.producer).weight.detach()
        norms[group.key] = weight.abs().sum(dim=tuple(range(1, weight.dim())))
    return norms


def layer_channel_masks(scores: Mapping[str, Tensor], current: Masks, sparsity: float) -> Masks:
    """In every layer, keep the ``int(channels × (1 - sparsity))`` channels with the largest scores (at least one).

    The per-layer rule of Li et al. 2017: each ranked layer loses the same share of its filters, the count rounded
    down as the reference code does (``num_keep = int(out_channels * (1 - prune_prob))``). Channels ``current``
    already prunes are never kept again (masks only shrink); ties are broken by position.

    Args:
        scores: Key (``<bn>.weight``) to one score per channel.
        current: The current channel masks, same keys.
        sparsity: Share of each layer's channels to prune, in ``[0, 1)``.

    Raises:
        ValueError: If ``sparsity`` is out of range, or fewer channels remain than the rule keeps.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"channel sparsity must be in [0, 1), got {sparsity!r}")
    # round(..., 9): 64 * (1 - 0.7) is 19.199999999999996 in floating point, and the rule means 19, not 18.
    keep = {name: max(1, math.floor(round(mask.numel() * (1 - sparsity), 9))) for name, mask in current.items()}
    keep = {name: min(count, int(current[name].sum())) for name, count in keep.items()}
    return select_layerwise(scores, current, keep)


_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


def _stream_sources(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> set[str] | None:
    """BatchNorm2d modules whose outputs reach ``node`` through elementwise ops and additions only, else ``None``."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.BatchNorm2d):
            return {str(node.target)}
        if isinstance(module, _ELEMENTWISE_MODULES) and node.args and isinstance(node.args[0], torch.fx.Node):
            return _stream_sources(node.args[0], modules)
        return None
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if is_add:
        operands = [arg for arg in node.args[:2] if isinstance(arg, torch.fx.Node)]
        if len(operands) != 2:
            return None
        sources: set[str] = set()
        for operand in operands:
            found = _stream_sources(operand, modules)
            if found is None:
                return None
            sources |= found
        return sources
    if node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS and isinstance(node.args[0], torch.fx.Node):
        return _stream_sources(node.args[0], modules)
    return None


def residual_streams(model: nn.Module, groups: Sequence[ChannelGroup]) -> list[tuple[ChannelGroup, ...]]:
    """The groups whose BatchNorms write the same residual stream, found by tracing the additions of ``model``.

    Two BatchNorms write one stream when their outputs meet in an addition, directly or through earlier additions
    and elementwise ops: in a ResNet stage, the stem's or the first shortcut's BatchNorm and every block's last one.
    Their channels can only be removed together. Streams with a writer outside ``groups``, or whose writers differ in
    width, are left out.

    Args:
        model: The model the groups were found in (``torch.fx``-traceable).
        groups: From :func:`channel_groups`.

    Returns:
        One tuple of groups per stream, in the order of the streams' first additions.
    """
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    by_bn = {group.bn: group for group in groups}
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    order: list[str] = []
    for node in graph.nodes:
        is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in ("add", "add_")
        )
        sources = _stream_sources(node, modules) if is_add else None
        if not sources or len(sources) < 2:
            continue
        names = sorted(sources, key=lambda name: list(modules).index(name))
        for name in names:
            parent.setdefault(name, name)
            if name not in order:
                order.append(name)
        for name in names[1:]:
            parent[root(name)] = root(names[0])
    streams: dict[str, list[str]] = {}
    for name in order:
        streams.setdefault(root(name), []).append(name)
    result = []
    for members in streams.values():
        if all(name in by_bn for name in members):
            widths = {modules[name].num_features for name in members}
            if len(widths) == 1:
                result.append(tuple(by_bn[name] for name in members))
    return result


def stream_channel_masks(
    scores: Mapping[str, Tensor], current: Masks, streams: Sequence[Sequence[ChannelGroup]], sparsity: float
) -> Masks:
    """Prune the same channels from every writer of a residual stream, by the writers' summed scores.

    Each stream keeps ``int(channels × (1 - sparsity))`` channels (at least one), those with the largest sum of the
    writers' scores (the L1 norms of all filters that write the channel, the way coupled layers are ranked together
    in structured pruning), among the channels every writer still keeps. Keys outside the streams are unchanged.

    Args:
        scores: Key (``<bn>.weight``) to one score per channel, for every writer.
        current: The current channel masks, including every writer.
        streams: From :func:`residual_streams`.
        sparsity: Share of each stream's channels to prune, in ``[0, 1)``.
    """
    result = dict(current.items())
    for stream in streams:
        keys = [group.key for group in stream]
        alive = torch.stack([current[key] for key in keys]).all(dim=0)
        summed = torch.stack([scores[key] for key in keys]).sum(dim=0)
        kept = layer_channel_masks({"stream": summed}, Masks({"stream": alive}), sparsity)["stream"]
        for key in keys:
            result[key] = kept.clone()
    return Masks(result)


def check_channel_budget(
    module: nn.Module, groups: Sequence[ChannelGroup], target_sparsity: float, min_channels_per_layer: int
) -> None:
    """Refuse a global channel share that cannot leave ``min_channels_per_layer`` channels in every ranked layer.

    Raises:
        ValueError: In one line, with the counts and the two ways out.
    """
    if not min_channels_per_layer:
        return
    total = sum(module.get_submodule(group.bn).num_features for group in groups)
    kept = total - round(target_sparsity * total)
    if kept < min_channels_per_layer * len(groups):
        raise ValueError(
            f"target_sparsity {target_sparsity} keeps {kept} of {total} channels, fewer than "
            f"min_channels_per_layer {min_channels_per_layer} in each of {len(groups)} "
            "BatchNorm layers; lower it or set min_channels_per_layer: 0."
        )


def channel_masked_parameters(module: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, nn.Parameter]:
    """What a channel mask keeps at zero: every Conv/Linear weight plus the ranked BatchNorms' ``γ`` and ``β``.

    The Conv/Linear weights are there for the sparsity a run reports; a pruned channel zeroes its filter, its
    BatchNorm entries and the reading kernels.
    """
    params = dict(prunable_parameters(module))
    for group in groups:
        bn = module.get_submodule(group.bn)
        params[f"{group.bn}.weight"] = bn.weight
        params[f"{group.bn}.bias"] = bn.bias
    return params
