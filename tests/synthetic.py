"""A tiny, learnable synthetic CIFAR-10 written to disk in both layouts the datamodule reads.

Every class is a distinct flat colour plus mild seeded noise, so a small network separates the classes within an
epoch or two. Both writers draw the same images for the same arguments, in class-major order (all images of
class 0, then class 1, ...), so an image folder written as PNG and the pickled batches load to identical tensors.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.cifar10 import BATCHES_DIR, CLASSES, TEST_BATCH, TRAIN_BATCHES

# One colour per class (RGB), pairwise far apart so the classes are separable from the channel means alone.
PALETTE = np.array(
    [
        [220, 30, 30],
        [30, 220, 30],
        [30, 30, 220],
        [220, 220, 30],
        [220, 30, 220],
        [30, 220, 220],
        [235, 235, 235],
        [20, 20, 20],
        [128, 128, 128],
        [235, 130, 20],
    ],
    dtype=np.int64,
)
NOISE_STD = 12.0
IMAGE_FORMATS = ("png", "jpg", "jpeg")


@dataclass(frozen=True)
class SyntheticCIFAR10:
    """Synthetic images in HWC layout: ``*_images`` ``(N, 32, 32, 3)`` uint8, ``*_labels`` ``(N,)`` int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _draw(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    noise = rng.normal(0.0, NOISE_STD, size=(len(labels), 32, 32, 3))
    images = np.clip(np.rint(PALETTE[labels][:, None, None, :] + noise), 0, 255).astype(np.uint8)
    return images, labels


def synthetic_cifar10(train_per_class: int = 20, test_per_class: int = 10, seed: int = 0) -> SyntheticCIFAR10:
    """Draw a synthetic CIFAR-10 in class-major order.

    Args:
        train_per_class: Training images per class.
        test_per_class: Test images per class.
        seed: Seed of the noise.

    Returns:
        The images and labels of both splits.
    """
    rng = np.random.default_rng(seed)
    train_images, train_labels = _draw(train_per_class, rng)
    test_images, test_labels = _draw(test_per_class, rng)
    return SyntheticCIFAR10(train_images, train_labels, test_images, test_labels)


def nearest_class(images_chw: np.ndarray) -> np.ndarray:
    """The class whose palette colour is closest to each image's mean colour (``(N, 3, H, W)`` input)."""
    means = images_chw.reshape(len(images_chw), 3, -1).mean(axis=2)
    return np.linalg.norm(means[:, None, :] - PALETTE[None, :, :], axis=2).argmin(axis=1)


def write_image_folder(
    root: Path, train_per_class: int = 20, test_per_class: int = 10, fmt: str = "png", seed: int = 0
) -> Path:
    """Write ``root/{train,test}/<class>/<index>.<fmt>``.

    Args:
        root: The data directory to write into (created if needed).
        train_per_class: Training images per class.
        test_per_class: Test images per class.
        fmt: ``png`` (lossless) or ``jpg`` / ``jpeg`` (quality 95).
        seed: Seed of the noise.

    Returns:
        ``root``, ready to pass as ``data_dir``.

    Raises:
        ValueError: If ``fmt`` is not one of ``png``, ``jpg``, ``jpeg``.
    """
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"`fmt` must be one of {IMAGE_FORMATS}, got {fmt!r}.")
    root = Path(root)
    data = synthetic_cifar10(train_per_class, test_per_class, seed)
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            class_dir = root / split / CLASSES[label]
            class_dir.mkdir(parents=True, exist_ok=True)
            options = {"quality": 95} if fmt != "png" else {}
            Image.fromarray(image).save(class_dir / f"{index:05d}.{fmt}", **options)
    return root


def _batch(images: np.ndarray, labels: np.ndarray, name: str) -> dict[bytes, object]:
    return {
        b"batch_label": name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1).copy(),
        b"filenames": [f"{name}_{index:05d}.png".encode() for index in range(len(images))],
    }


def write_batches_py(root: Path, train_per_class: int = 20, test_per_class: int = 10, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    The pickles mimic the official files as ``pickle.load(f, encoding="bytes")`` returns them: bytes keys,
    ``b"data"`` as an ``(N, 3072)`` uint8 array in channel-plane order, ``b"labels"`` as a list of ints. The
    training images are cut into five consecutive batches.

    Args:
        root: The data directory to write into (created if needed).
        train_per_class: Training images per class.
        test_per_class: Test images per class.
        seed: Seed of the noise.

    Returns:
        ``root``, ready to pass as ``data_dir``.
    """
    root = Path(root)
    folder = root / BATCHES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    data = synthetic_cifar10(train_per_class, test_per_class, seed)
    chunks = np.array_split(np.arange(len(data.train_labels)), len(TRAIN_BATCHES))
    for name, chunk in zip(TRAIN_BATCHES, chunks, strict=True):
        with open(folder / name, "wb") as file:
            pickle.dump(_batch(data.train_images[chunk], data.train_labels[chunk], name), file)
    with open(folder / TEST_BATCH, "wb") as file:
        pickle.dump(_batch(data.test_images, data.test_labels, TEST_BATCH), file)
    meta = {
        b"label_names": [name.encode() for name in CLASSES],
        b"num_cases_per_batch": len(chunks[0]),
        b"num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump(meta, file)
    return root
