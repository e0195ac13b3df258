"""Where CIFAR-10 comes from: the ``cifar-10-batches-py`` pickles or an image folder, decoded to uint8 tensors.

Missing or unreadable data gets one line that says what was looked for and where (and a nearby copy if one exists).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor

from datamodules.augment import IMAGE_SIZE

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_BATCH = "test_batch"

_DECODE_CHUNK = 2048


@dataclass(frozen=True)
class TensorSplit:
    """One split as tensors: ``images`` ``(N, 3, 32, 32)`` uint8 and ``labels`` ``(N,)`` int64."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> TensorSplit:
        """Return this split on ``device`` (itself when it is already there)."""
        if self.images.device == device:
            return self
        return TensorSplit(self.images.to(device), self.labels.to(device))


def one_line(error: BaseException) -> str:
    """``Type: message`` of ``error`` on one line, at most 200 characters."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= 200 else text[:197] + "..."


def _unreadable(path: Path | str) -> PermissionError:
    return PermissionError(
        f"cannot read {path}: permission denied (--data.data_dir must be readable by this user, folders with "
        f"read and execute permission, e.g. `chmod -R u+rX {path}`)"
    )


def _check_readable(folder: Path) -> None:
    """Raise a one-line PermissionError naming ``folder`` if it exists but this user cannot list or enter it."""
    try:
        is_dir = folder.is_dir()
    except PermissionError:  # a folder above it cannot be entered
        raise _unreadable(folder) from None
    if is_dir and not os.access(folder, os.R_OK | os.X_OK):
        raise _unreadable(folder)


def class_dirs(split_dir: Path) -> list[str]:
    """The class folders of a ``train/`` or ``test/`` folder, sorted (none if it is missing; one line if unreadable)."""
    _check_readable(split_dir)
    if not split_dir.is_dir():
        return []
    try:
        with os.scandir(split_dir) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    except PermissionError:
        raise _unreadable(split_dir) from None


def find_source(root: Path) -> tuple[str | None, str]:
    """Return ``("image_folder" | "batches_py" | None, note)``; the note says what was incomplete, if anything.

    Raises:
        PermissionError: In one line, naming the folder, if ``root`` or a folder it looks into cannot be read.
    """
    _check_readable(root)
    train_classes, test_classes = class_dirs(root / "train"), class_dirs(root / "test")
    if train_classes and test_classes:
        return "image_folder", ""
    notes = []
    if train_classes or test_classes:
        present, absent = ("train", "test") if train_classes else ("test", "train")
        notes.append(f"found {present}/ class folders but no {absent}/ ones")
    batches = root / BATCHES_DIR
    _check_readable(batches)
    if batches.is_dir():
        missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (batches / name).is_file()]
        if not missing:
            return "batches_py", ""
        notes.append(f"{BATCHES_DIR} lacks {', '.join(missing)}")
    return None, f" ({'; '.join(notes)})" if notes else ""


_MAX_NEIGHBOURS = 256
"""Subfolders of ``data_dir`` searched for a copy when ``data_dir`` itself holds none."""


def nearby_copy(root: Path) -> str:
    """Name a complete copy next to ``root``, for a ``data_dir`` that points at its parent or at one of its folders.

    Looks in ``root``'s subfolders (``data_dir=/tmp`` with the data in ``/tmp/cifar10``) and, when ``root`` is a
    ``train``, ``test`` or ``cifar-10-batches-py`` folder, in its parent.

    Returns:
        A hint such as ``found train/ and test/ in /tmp/cifar10: use --data.data_dir /tmp/cifar10``, or ``""``.
    """
    candidates = [root.parent] if root.name in ("train", "test", BATCHES_DIR) else []
    try:
        with os.scandir(root) as entries:
            names = sorted(entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir())
    except OSError:  # missing or unreadable: nothing below it to suggest
        names = []
    candidates.extend(root / name for name in names[:_MAX_NEIGHBOURS])
    for candidate in candidates:
        try:
            kind, _ = find_source(candidate)
        except OSError:  # an unreadable neighbour is not the copy
            continue
        if kind == "image_folder":
            return f"found train/ and test/ in {candidate}: use --data.data_dir {candidate}"
        if kind == "batches_py":
            return f"found {BATCHES_DIR}/ in {candidate}: use --data.data_dir {candidate}"
    return ""


def missing_data_message(root: Path, download_note: str, found_note: str, nearby: str = "") -> str:
    """The one line that says no CIFAR-10 was found under ``root``, what was looked for, and what to do."""
    if nearby:
        return (
            f"CIFAR-10 not found in --data.data_dir {root}{found_note}, but {nearby} (data_dir is the folder that "
            f"holds train/<class>/ and test/<class>/, or {BATCHES_DIR}/)."
        )
    return (
        f"CIFAR-10 not found: looked for an image folder at {root}/train/<class>/*.{{png,jpg,jpeg}} and "
        f"{root}/test/<class>/*, and for pickled batches at {root / BATCHES_DIR}{found_note}; {download_note}. "
        "Fix: point --data.data_dir at an extracted copy (e.g. `tar -xzf cifar10-jpeg.tar.gz -C /tmp/cifar10` "
        "then `--data.data_dir /tmp/cifar10`), or pass `--data.download true` on a machine with internet access."
    )


def _decode_with_pil(path: str) -> Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def _decode_chunk(paths: Sequence[str]) -> Tensor:
    """Decode image files into a ``(len(paths), 3, 32, 32)`` uint8 tensor (torchvision.io, PIL as fallback)."""
    out = torch.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for position, path in enumerate(paths):
        try:
            try:
                image = torchvision.io.decode_image(
                    torchvision.io.read_file(path), mode=torchvision.io.ImageReadMode.RGB
                )
            except RuntimeError:  # formats or variants libjpeg/libpng in torchvision cannot read (or no permission)
                image = _decode_with_pil(path)
        except PermissionError:
            raise _unreadable(path) from None
        if image.shape != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"CIFAR-10 images must be {IMAGE_SIZE}x{IMAGE_SIZE}, got {tuple(image.shape[1:])} in {path}."
            )
        out[position] = image
    return out


def read_image_folder(split_dir: Path, classes: Sequence[str]) -> TensorSplit:
    """Decode ``split_dir/<class>/*`` in sorted file order; the label is the class's index in ``classes``."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        _check_readable(class_dir)
        try:
            with os.scandir(class_dir) as entries:
                files = sorted(
                    entry.name
                    for entry in entries
                    if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                )
        except PermissionError:
            raise _unreadable(class_dir) from None
        paths.extend(str(class_dir / file) for file in files)
        labels.extend([label] * len(files))
    if not paths:
        raise FileNotFoundError(f"No .png/.jpg/.jpeg images found under {split_dir}/<class>/.")
    chunks = [paths[start : start + _DECODE_CHUNK] for start in range(0, len(paths), _DECODE_CHUNK)]
    # File reads and libjpeg/libpng release the GIL, so threads overlap I/O and decoding.
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 1) + 1)) as pool:
        images = torch.cat(list(pool.map(_decode_chunk, chunks)))
    return TensorSplit(images, torch.tensor(labels, dtype=torch.long))


def read_batches(paths: Sequence[Path]) -> TensorSplit:
    """Parse CIFAR-10 python pickles (``b"data"``: ``(N, 3072)`` uint8, ``b"labels"``: list of int)."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as file:
                entry = pickle.load(file, encoding="bytes")
        except PermissionError:
            raise _unreadable(path) from None
        data = entry.get(b"data", entry.get("data"))
        targets = entry.get(b"labels", entry.get("labels"))
        if data is None or targets is None:
            raise ValueError(f"{path} is not a CIFAR-10 batch: it has no 'data' and 'labels' keys.")
        images.append(torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)))
        labels.append(torch.as_tensor(np.asarray(targets), dtype=torch.long))
    return TensorSplit(torch.cat(images), torch.cat(labels))
