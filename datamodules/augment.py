"""Batched, seeded augmentation of CIFAR-10 on the training device: random crop with padding, flip, normalize.

The crop offsets and flips of an epoch are a pure function of ``(seed, epoch, sample position)``
(:func:`augmentation_plan`), so a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from pruning_callbacks.engine.seeding import generator as seeded_generator

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32
PADDING = 4


def augmentation_plan(seed: int, epoch: int, num_samples: int) -> tuple[Tensor, Tensor]:
    """Draw one epoch's crop offsets and flips for every training sample, on the CPU.

    Args:
        seed: The run seed.
        epoch: The training epoch.
        num_samples: Number of samples in the training split.

    Returns:
        ``shifts`` of shape ``(num_samples, 2)`` (int64 row and column offsets of the crop in the padded image,
        each in ``[0, 2 * PADDING]``) and ``flips`` of shape ``(num_samples,)`` (bool, ``True`` = mirror).
    """
    generator = seeded_generator(seed, "augment", epoch)
    shifts = torch.randint(0, 2 * PADDING + 1, (num_samples, 2), generator=generator)
    flips = torch.randint(0, 2, (num_samples,), generator=generator).bool()
    return shifts, flips


def augment_batch(images: Tensor, shifts: Tensor, flips: Tensor, padding: int = PADDING) -> Tensor:
    """Random-crop with zero padding and horizontal flip, for a whole batch in one gather.

    Equivalent to ``torchvision.transforms.RandomCrop(size, padding=padding)`` followed by
    ``RandomHorizontalFlip`` with the crop's top-left corner and the flip given explicitly. The offsets are not
    range-checked (that would sync the device); they must lie in ``[0, 2 * padding]``.

    Args:
        images: ``(B, C, H, W)`` images of any dtype (uint8 here), on any device.
        shifts: ``(B, 2)`` integer row and column offsets of the crop inside the padded image.
        flips: ``(B,)`` bool, ``True`` where the cropped image is mirrored left to right.
        padding: Zero padding on each side before cropping.

    Returns:
        The augmented batch, same shape, dtype and device as ``images``.

    Raises:
        ValueError: If the shapes of ``images``, ``shifts`` and ``flips`` do not fit together.
    """
    if images.dim() != 4 or shifts.shape != (images.shape[0], 2) or flips.shape != (images.shape[0],):
        raise ValueError(
            f"augment_batch expects images (B, C, H, W), shifts (B, 2) and flips (B,), got "
            f"{tuple(images.shape)}, {tuple(shifts.shape)} and {tuple(flips.shape)}."
        )
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    shifts = shifts.to(device=images.device, dtype=torch.long)
    flips = flips.to(device=images.device, dtype=torch.bool)
    rows = shifts[:, :1] + torch.arange(height, device=images.device)
    columns = torch.arange(width, device=images.device).expand(batch, width)
    columns = torch.where(flips[:, None], columns.flip(-1), columns) + shifts[:, 1:]
    index = (rows[:, :, None] * padded_width + columns[:, None, :]).view(batch, 1, height * width)
    gathered = padded.flatten(2).gather(2, index.expand(batch, channels, height * width))
    return gathered.view(batch, channels, height, width)


@functools.lru_cache(maxsize=8)
def _channel_stats(device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean and std as ``(3, 1, 1)`` tensors on ``device``, made once so normalising never copies to the device."""
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device).view(3, 1, 1)
    return mean, std


def normalize(images: Tensor) -> Tensor:
    """Scale uint8 images to ``[0, 1]`` and standardise each channel with the CIFAR-10 mean and std.

    Args:
        images: ``(..., 3, H, W)`` uint8 images.

    Returns:
        float32 images of the same shape on the same device.
    """
    mean, std = _channel_stats(images.device)
    return images.float().div_(255.0).sub_(mean).div_(std)
