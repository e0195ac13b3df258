"""The CIFAR variant of ResNet18.

He et al. 2016, "Deep Residual Learning for Image Recognition" (https://arxiv.org/abs/1512.03385), adapted to
32x32 inputs the way most CIFAR-10 pruning papers do: a 3x3 stem with stride 1, no max-pool, four stages of two
BasicBlocks each and 1x1 convolution shortcuts where the shape changes. Parameter names follow the widely used
``kuangliu/pytorch-cifar`` layout (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.shortcut.0``, ``linear``), so
state dicts saved by this project load into that code and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution and of the shortcut.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
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
