"""The CIFAR variant of ResNet18.

He et al. 2016, "Deep Residual Learning for Image Recognition" (https://arxiv.org/abs/1512.03385), adapted to
32x32 inputs the way most CIFAR-10 pruning papers do: a 3x3 stem with stride 1, no max-pool, four stages of two
BasicBlocks each and 1x1 convolution shortcuts where the shape changes. Parameter names follow the widely used
``kuangliu/pytorch-cifar`` layout (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.shortcut.0``, ``linear``), so
state dicts saved by this project load into that code and back.

A channel-slimmed network (:mod:`analysis.slim`) is the same network with fewer channels in some layers:
:class:`SlimResNet18` builds it from a :class:`ResNet18Channels` spec, and :func:`resnet18_from_state_dict` builds
whichever of the two a state dict's shapes describe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution and of the shortcut.
        mid_planes: Channels between the two convolutions; ``None`` means ``planes`` (a slimmed block has fewer).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, mid_planes: int | None = None) -> None:
        super().__init__()
        mid_planes = planes if mid_planes is None else mid_planes
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def build_resnet18_layers(width: int = 64, num_classes: int = 10) -> dict[str, nn.Module]:
    """Build the named top-level layers of a CIFAR ResNet18.

    Returned as a dict so that both :class:`ResNet18` and the LightningModule can own the layers directly, which
    keeps parameter names (and checkpoints) identical between the two.

    Args:
        width: Channels of the first stage; the stages use ``width * (1, 2, 4, 8)``. 64 is the standard network.
        num_classes: Outputs of the classifier.

    Returns:
        Ordered mapping ``conv1, bn1, layer1..layer4, linear``.

    Raises:
        ValueError: If ``width`` or ``num_classes`` is not a positive integer.
    """
    if width < 1:
        raise ValueError(f"width must be a positive integer, got {width}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    layers: dict[str, nn.Module] = {
        "conv1": nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False),
        "bn1": nn.BatchNorm2d(width),
    }
    in_planes = width
    for stage, (multiplier, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
        planes = width * multiplier
        layers[f"layer{stage}"] = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
        in_planes = planes
    layers["linear"] = nn.Linear(in_planes, num_classes)
    return layers


def resnet18_forward(net: nn.Module, x: Tensor) -> Tensor:
    """Forward pass over a module that owns the layers from :func:`build_resnet18_layers`.

    Args:
        net: Module with attributes ``conv1, bn1, layer1..layer4, linear``.
        x: Images, shape ``(N, 3, H, W)``.

    Returns:
        Logits, shape ``(N, num_classes)``.
    """
    out = F.relu(net.bn1(net.conv1(x)))
    out = net.layer4(net.layer3(net.layer2(net.layer1(out))))
    out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
    return net.linear(out)


class ResNet18(nn.Module):
    """Plain ``nn.Module`` CIFAR ResNet18: 11,173,962 parameters at ``width=64``.

    Args:
        width: Channels of the first stage (64 for the standard network).
        num_classes: Outputs of the classifier.
    """

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        for name, layer in build_resnet18_layers(width, num_classes).items():
            self.add_module(name, layer)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits for a batch of images."""
        return resnet18_forward(self, x)


ModuleT = TypeVar("ModuleT", bound=nn.Module)
STAGES = 4
BLOCKS_PER_STAGE = 2
STAGE_STRIDES = (1, 2, 2, 2)


@dataclass(frozen=True)
class ResNet18Channels:
    """The channel counts of a (possibly slimmed) CIFAR ResNet18.

    A stage's blocks add their output to the stage's residual stream, so every block of a stage writes the same
    channels: one count per stage (``streams``; the stem writes stage 1's, through its identity shortcut). Inside
    a block only the channels between its two convolutions are free (``inner``, one per block).

    Attributes:
        streams: Residual-stream channels of the four stages (``width * (1, 2, 4, 8)`` unslimmed).
        inner: Channels between the two convolutions of each block, stage by stage, two per stage.
        num_classes: Outputs of the classifier.
    """

    streams: tuple[int, ...]
    inner: tuple[tuple[int, ...], ...]
    num_classes: int = 10

    def __post_init__(self) -> None:
        if len(self.streams) != STAGES or len(self.inner) != STAGES:
            raise ValueError(f"a ResNet18 has {STAGES} stages, got streams {self.streams} and inner {self.inner}")
        counts = [*self.streams, *(count for stage in self.inner for count in stage), self.num_classes]
        if any(len(stage) != BLOCKS_PER_STAGE for stage in self.inner) or any(count < 1 for count in counts):
            raise ValueError(
                f"every stage needs {BLOCKS_PER_STAGE} blocks and every count must be a positive integer, got "
                f"streams {self.streams}, inner {self.inner}, num_classes {self.num_classes}"
            )

    @classmethod
    def full(cls, width: int = 64, num_classes: int = 10) -> ResNet18Channels:
        """The unslimmed network of ``width``."""
        streams = tuple(width * multiplier for multiplier in (1, 2, 4, 8))
        return cls(streams, tuple((planes,) * BLOCKS_PER_STAGE for planes in streams), num_classes)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> ResNet18Channels:
        """Read the counts from a ResNet18 state dict's weight shapes.

        Raises:
            ValueError: If a weight of the ResNet18 layout is missing.
        """
        try:
            streams = tuple(int(state_dict[f"layer{s}.1.conv2.weight"].shape[0]) for s in range(1, STAGES + 1))
            inner = tuple(
                tuple(int(state_dict[f"layer{s}.{b}.conv1.weight"].shape[0]) for b in range(BLOCKS_PER_STAGE))
                for s in range(1, STAGES + 1)
            )
            num_classes = int(state_dict["linear.weight"].shape[0])
        except KeyError as error:
            raise ValueError(f"not a CIFAR ResNet18 state dict: it has no {error.args[0]!r}") from None
        return cls(streams, inner, num_classes)

    def as_dict(self) -> dict[str, object]:
        """Plain lists and ints, for a file that ``torch.load(weights_only=True)`` reads."""
        return {
            "streams": list(self.streams),
            "inner": [list(stage) for stage in self.inner],
            "num_classes": self.num_classes,
        }

    def parameter_count(self) -> int:
        """Parameters of the network these counts describe (convolutions, BatchNorm scales and shifts, linear)."""
        total = 3 * self.streams[0] * 9 + 2 * self.streams[0]  # stem conv + bn
        in_planes = self.streams[0]
        for stage, (planes, stride) in enumerate(zip(self.streams, STAGE_STRIDES, strict=True)):
            for block, mid in enumerate(self.inner[stage]):
                total += in_planes * mid * 9 + 2 * mid + mid * planes * 9 + 2 * planes
                if block == 0 and (stride != 1 or in_planes != planes):
                    total += in_planes * planes + 2 * planes
                in_planes = planes
        return total + in_planes * self.num_classes + self.num_classes


def build_slim_resnet18_layers(channels: ResNet18Channels) -> dict[str, nn.Module]:
    """The named top-level layers of a ResNet18 with the given channel counts (same names as the full network).

    Args:
        channels: The counts; :meth:`ResNet18Channels.full` gives the layers of :func:`build_resnet18_layers`.
    """
    layers: dict[str, nn.Module] = {
        "conv1": nn.Conv2d(3, channels.streams[0], kernel_size=3, stride=1, padding=1, bias=False),
        "bn1": nn.BatchNorm2d(channels.streams[0]),
    }
    in_planes = channels.streams[0]
    for stage, (planes, stride) in enumerate(zip(channels.streams, STAGE_STRIDES, strict=True), start=1):
        first, second = channels.inner[stage - 1]
        layers[f"layer{stage}"] = nn.Sequential(
            BasicBlock(in_planes, planes, stride, mid_planes=first), BasicBlock(planes, planes, 1, mid_planes=second)
        )
        in_planes = planes
    layers["linear"] = nn.Linear(in_planes, channels.num_classes)
    return layers


class SlimResNet18(nn.Module):
    """A CIFAR ResNet18 with per-stage and per-block channel counts: what channel slimming exports.

    Parameter names are those of :class:`ResNet18`, so the slimmed state dict loads strictly. A file written by
    ``python cli.py export CKPT --slim out.pt`` loads with::

        payload = torch.load("out.pt", weights_only=True)
        model = SlimResNet18.from_state_dict(payload["state_dict"]).eval()

    Args:
        channels: The channel counts.
    """

    def __init__(self, channels: ResNet18Channels) -> None:
        super().__init__()
        self.channels = channels
        for name, layer in build_slim_resnet18_layers(channels).items():
            self.add_module(name, layer)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> SlimResNet18:
        """Build the network that ``state_dict``'s shapes describe and load it strictly.

        Raises:
            ValueError: If the state dict is not a (slimmed) CIFAR ResNet18's.
        """
        return _load_strictly(cls(ResNet18Channels.from_state_dict(state_dict)), state_dict, "a slimmed ResNet18")

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits for a batch of images."""
        return resnet18_forward(self, x)


def resnet18_from_state_dict(state_dict: Mapping[str, Tensor]) -> nn.Module:
    """A :class:`ResNet18` or :class:`SlimResNet18` (whichever the shapes describe) loaded strictly with the weights.

    Args:
        state_dict: A ResNet18 state dict, full or slimmed.

    Raises:
        ValueError: If it is not a CIFAR ResNet18 state dict.
    """
    channels = ResNet18Channels.from_state_dict(state_dict)
    width = channels.streams[0]
    if channels == ResNet18Channels.full(width, channels.num_classes):
        network = ResNet18(width=width, num_classes=channels.num_classes)
        return _load_strictly(network, state_dict, f"a CIFAR ResNet18 of width {width}")
    return SlimResNet18.from_state_dict(state_dict)


def _load_strictly(model: ModuleT, state_dict: Mapping[str, Tensor], what: str) -> ModuleT:
    """``model`` with ``state_dict`` loaded strictly; a mismatch is a one-line ``ValueError`` naming ``what``."""
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as error:
        raise ValueError(f"the weights do not fit {what}: {str(error).splitlines()[-1].strip()}") from None
    return model
