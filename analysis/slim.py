"""Channel slimming: turn a ResNet18 whose channels are masked into a physically smaller ResNet18.

Channel pruning here (Early-Bird, :class:`~pruning_callbacks.FilterPruning`) keeps the network's shape and
zeroes what a pruned channel owns, its BatchNorm ``γ`` and ``β`` among it. A BatchNorm channel with ``γ = β = 0``
outputs exactly 0 whatever its input, so it can be cut out together with the convolution filter that feeds it and
the input channels that read it, and the logits do not change (beyond the order of floating-point sums).

Which channels go (the residual policy):

* **Inside a block** (``layerS.B.bn1``): a dead channel is removed from ``conv1``'s output, ``bn1`` and ``conv2``'s
  input. This is the channel set Li et al. 2017 prune in ResNets ("Pruning Filters for Efficient ConvNets",
  https://arxiv.org/abs/1608.08710, section 4.3: only the first layer of each residual block).
* **On a stage's residual stream**: every block of a stage adds its output to the same channels, so a stream
  channel can only go as a whole. It is removed when it is dead in every BatchNorm that writes the stream (the
  stem's ``bn1`` for stage 1, ``layerS.0.shortcut.1`` for the others, and each block's ``bn2``): then the stream
  carries 0 there through every addition and ReLU. A stream channel that one writer zeroes but another keeps is
  kept in all of them (the shortcut keeps it), as the Early-Bird code's ``resprune.py`` keeps it.

A set that would lose every channel keeps its first one (it is dead, so the output is still exact).

The result is a plain state dict with the parameter names of :class:`lit_modules.resnet.ResNet18`;
:class:`lit_modules.resnet.SlimResNet18` builds the network from its shapes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lit_modules.resnet import BLOCKS_PER_STAGE, STAGES, ResNet18Channels, SlimResNet18, resnet18_from_state_dict
from pruning_callbacks.engine.io import atomic_torch_save

FORMAT = "lightning-pruning/slim-resnet18"
FORMAT_VERSION = 1
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var")
CHECK_IMAGES = 8
"""Random images the slimmed model's logits are compared on against the masked model's."""


@dataclass(frozen=True)
class SlimResult:
    """A slimmed network and what slimming removed.

    Attributes:
        state_dict: The slimmed state dict (ResNet18 parameter names, smaller shapes).
        before: Channel counts of the masked network.
        after: Channel counts of the slimmed network.
    """

    state_dict: dict[str, Tensor]
    before: ResNet18Channels
    after: ResNet18Channels

    @property
    def parameters_before(self) -> int:
        """Parameters of the network before slimming."""
        return self.before.parameter_count()

    @property
    def parameters_after(self) -> int:
        """Parameters of the slimmed network."""
        return self.after.parameter_count()


def dead_channels(state_dict: Mapping[str, Tensor], bn: str) -> Tensor:
    """Channels of BatchNorm ``bn`` whose output is exactly 0 whatever the input: ``γ = β = 0``.

    Args:
        state_dict: A ResNet18 state dict.
        bn: The BatchNorm's module name, e.g. ``layer1.0.bn1``.
    """
    return (state_dict[f"{bn}.weight"] == 0) & (state_dict[f"{bn}.bias"] == 0)


def _kept(dead: Tensor) -> Tensor:
    """Indices of the live channels, or of the first channel when none is live."""
    kept = torch.nonzero(~dead).flatten()
    return kept if kept.numel() else torch.zeros(1, dtype=torch.long)


def _stream_writers(stage: int) -> list[str]:
    first = "bn1" if stage == 1 else f"layer{stage}.0.shortcut.1"
    return [first, *(f"layer{stage}.{block}.bn2" for block in range(BLOCKS_PER_STAGE))]


def slim_state_dict(state_dict: Mapping[str, Tensor]) -> SlimResult:
    """Cut the dead channels (see the module docstring) out of a CIFAR ResNet18 state dict.

    Args:
        state_dict: A ResNet18 state dict (full width or already slimmed), float tensors.

    Returns:
        The slimmed state dict and the channel counts before and after.

    Raises:
        ValueError: If it is not a CIFAR ResNet18 state dict.
    """
    before = ResNet18Channels.from_state_dict(state_dict)
    source = {name: tensor.detach() for name, tensor in state_dict.items()}
    streams: list[Tensor] = []
    for stage in range(1, STAGES + 1):
        dead = torch.stack([dead_channels(source, bn) for bn in _stream_writers(stage)]).all(dim=0)
        streams.append(_kept(dead))
    out = dict(source)

    def take_bn(bn: str, keep: Tensor) -> None:
        for entry in BN_ENTRIES:
            out[f"{bn}.{entry}"] = source[f"{bn}.{entry}"].index_select(0, keep).clone()

    def take_conv(conv: str, rows: Tensor, columns: Tensor) -> None:
        out[f"{conv}.weight"] = source[f"{conv}.weight"].index_select(0, rows).index_select(1, columns).clone()

    take_conv("conv1", streams[0], torch.arange(source["conv1.weight"].shape[1]))
    take_bn("bn1", streams[0])
    inner: list[tuple[int, ...]] = []
    for stage in range(1, STAGES + 1):
        stream = streams[stage - 1]
        counts = []
        for block in range(BLOCKS_PER_STAGE):
            prefix = f"layer{stage}.{block}"
            reads = streams[stage - 2] if stage > 1 and block == 0 else stream
            mid = _kept(dead_channels(source, f"{prefix}.bn1"))
            take_conv(f"{prefix}.conv1", mid, reads)
            take_bn(f"{prefix}.bn1", mid)
            take_conv(f"{prefix}.conv2", stream, mid)
            take_bn(f"{prefix}.bn2", stream)
            if f"{prefix}.shortcut.0.weight" in source:
                take_conv(f"{prefix}.shortcut.0", stream, reads)
                take_bn(f"{prefix}.shortcut.1", stream)
            counts.append(int(mid.numel()))
        inner.append(tuple(counts))
    out["linear.weight"] = source["linear.weight"].index_select(1, streams[-1]).clone()
    after = ResNet18Channels(tuple(int(s.numel()) for s in streams), tuple(inner), before.num_classes)
    return SlimResult(out, before, after)


@torch.no_grad()
def logit_difference(
    masked: Mapping[str, Tensor], slimmed: Mapping[str, Tensor], images: int = CHECK_IMAGES, seed: int = 0
) -> tuple[float, float]:
    """Largest absolute difference of the two networks' eval-mode logits on seeded random images, and the largest logit.

    Args:
        masked: The masked network's state dict.
        slimmed: The slimmed network's state dict.
        images: How many ``(3, 32, 32)`` standard-normal images to compare on.
        seed: Seed of the images.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(images, 3, 32, 32, generator=generator)
    reference = resnet18_from_state_dict(_float(masked)).eval()(x)
    result = SlimResNet18.from_state_dict(_float(slimmed)).eval()(x)
    return float((reference - result).abs().max()), float(reference.abs().max())


def _float(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state_dict.items()}


def payload(result: SlimResult, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``--slim`` writes: plain containers, loadable with ``torch.load(path, weights_only=True)``.

    Args:
        result: From :func:`slim_state_dict`.
        metadata: Extra entries for ``metadata`` (the source checkpoint, the logit check).
    """
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "channels": result.after.as_dict(),
        "metadata": {
            "parameters_before": result.parameters_before,
            "parameters_after": result.parameters_after,
            "channels_before": result.before.as_dict(),
            "torch_version": str(torch.__version__),
            **dict(metadata or {}),
        },
        "state_dict": result.state_dict,
    }


def write_slim(result: SlimResult, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> None:
    """Write :func:`payload` to ``path`` atomically (readable by others)."""
    atomic_torch_save(payload(result, metadata), path)


def is_slim_payload(obj: object) -> bool:
    """Whether ``obj`` is what :func:`write_slim` writes."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT
