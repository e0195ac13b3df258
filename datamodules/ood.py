"""Out-of-distribution (OOD) test sets for CIFAR-10 models, as uint8 images of shape ``(N, 3, 32, 32)``.

A model trained on CIFAR-10 should be less confident on images that are not CIFAR-10; how well its maximum softmax
probability separates the two sets is the OOD AUROC of Hendrycks & Gimpel 2017 (https://arxiv.org/abs/1610.02136).
The sets, named by :data:`OOD_CHOICES` or a folder path:

* ``gaussian``: per-pixel ``N(0.5, 0.25^2)`` noise in pixel space ``[0, 1]``, clamped to ``[0, 1]`` and quantized to
  uint8 (``round(255 * x)``), as in Hendrycks et al. 2019 (https://arxiv.org/abs/1812.04606);
* ``uniform``: per-pixel uniform integers ``{0, ..., 255}``;
* ``cifar100``: the CIFAR-100 test set (Krizhevsky 2009), near-OOD: similar images, disjoint classes;
* ``svhn``: the SVHN test set (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/), far-OOD;
* a folder: every ``*.png``, ``*.jpg`` and ``*.jpeg`` under it (any depth, sorted by path), resized to 32x32.

The noise sets are a pure function of ``(seed, kind, size)``, drawn on a CPU generator, so every DDP rank and every
rerun builds the same images without communicating. ``cifar100`` and ``svhn`` come through torchvision, downloaded
into the data directory by :func:`prepare_ood` (SVHN needs ``scipy`` to read its ``.mat`` file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor

from pruning_callbacks.engine.seeding import generator as seeded_generator

NOISE_SETS = ("gaussian", "uniform")
DOWNLOAD_SETS = ("cifar100", "svhn")
OOD_CHOICES = ("none", *NOISE_SETS, *DOWNLOAD_SETS)
GAUSSIAN_MEAN = 0.5
GAUSSIAN_STD = 0.25
IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OOD_LABEL = -1  # OOD images belong to no class; -1 makes an accidental use as a class label fail loudly.

_DECODE_CHUNK = 1024


def allowed_values() -> str:
    """The allowed ``ood`` values as one phrase, for error messages."""
    return f"{', '.join(OOD_CHOICES)} (or null), or a path to a folder of .png/.jpg/.jpeg images"


def resolve_ood(ood: str | os.PathLike | None) -> str | None:
    """Normalise an ``ood`` option: ``None`` / ``"none"`` / ``"null"`` -> ``None``, a set name, or a folder path.

    Names are case-insensitive and win over folders of the same name (write ``./svhn`` for such a folder).

    Args:
        ood: The option as given in a config.

    Returns:
        ``None``, one of :data:`NOISE_SETS` / :data:`DOWNLOAD_SETS`, or the folder path as a string.

    Raises:
        ValueError: If ``ood`` is neither an allowed name nor an existing folder.
        PermissionError: If ``ood`` is a folder this user cannot read.
    """
    if ood is None:
        return None
    if not isinstance(ood, (str, os.PathLike)):
        raise ValueError(f"`ood` must be one of {allowed_values()}, got {ood!r}.")
    name = str(ood)
    if name.lower() in ("none", "null", ""):
        return None
    if name.lower() in (*NOISE_SETS, *DOWNLOAD_SETS):
        return name.lower()
    if Path(name).expanduser().is_dir():
        _check_readable(Path(name).expanduser())
        return name
    raise ValueError(f"`ood` must be one of {allowed_values()}, got {name!r} (not a known name nor a folder).")


def _unreadable(path: Path | str) -> PermissionError:
    return PermissionError(
        f"cannot read the --data.ood folder {path}: permission denied (it must be readable by this user, folders "
        f"with read and execute permission, e.g. `chmod -R u+rX {path}`)"
    )


def _check_readable(folder: Path) -> None:
    """Raise a one-line PermissionError naming ``folder`` if this user cannot list or enter it.

    Without this check an unreadable folder would look empty (``Path.rglob`` skips what it cannot read).
    """
    if not os.access(folder, os.R_OK | os.X_OK):
        raise _unreadable(folder)


def noise_images(kind: str, size: int, seed: int) -> Tensor:
    """Draw a reproducible noise OOD set.

    Args:
        kind: ``gaussian`` (``round(255 * clamp(N(0.5, 0.25^2), 0, 1))`` per pixel) or ``uniform`` (``U{0..255}``).
        size: Number of images.
        seed: Run seed; the draw comes from ``pruning_callbacks.engine.seeding.generator(seed, "ood", kind)``.

    Returns:
        ``(size, 3, 32, 32)`` uint8 images on the CPU.

    Raises:
        ValueError: If ``kind`` is not a noise set or ``size`` is not positive.
    """
    if kind not in NOISE_SETS:
        raise ValueError(f"noise OOD `kind` must be one of {', '.join(NOISE_SETS)}, got {kind!r}.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` must be an int >= 1, got {size!r}.")
    generator = seeded_generator(seed, "ood", kind)
    shape = (size, 3, IMAGE_SIZE, IMAGE_SIZE)
    if kind == "uniform":
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    pixels = torch.randn(shape, generator=generator).mul_(GAUSSIAN_STD).add_(GAUSSIAN_MEAN).clamp_(0.0, 1.0)
    return pixels.mul_(255.0).round_().to(torch.uint8)


def _torchvision_set(kind: str, root: Path, download: bool) -> torchvision.datasets.VisionDataset:
    if kind == "cifar100":
        return torchvision.datasets.CIFAR100(str(root), train=False, download=download)
    return torchvision.datasets.SVHN(str(root), split="test", download=download)


def _one_line(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= 160 else text[:157] + "..."


def _unavailable(kind: str, root: Path, why: str) -> str:
    others = ", ".join(name for name in OOD_CHOICES if name != kind)
    return (
        f"OOD set {kind!r} is not available in {root} ({why}); use --data.ood with one of {others}, "
        "or a folder of .png/.jpg/.jpeg images."
    )


def prepare_ood(kind: str | None, root: Path, download: bool) -> None:
    """Make sure a torchvision OOD set (``cifar100``, ``svhn``) is in ``root``, downloading it if allowed.

    Nothing to do for ``None``, the noise sets and folders.

    Args:
        kind: A value returned by :func:`resolve_ood`.
        root: The data directory.
        download: Download when there is no local copy.

    Raises:
        FileNotFoundError: In one line, when there is no local copy and the download is disabled or fails (offline).
    """
    if kind not in DOWNLOAD_SETS:
        return
    try:
        _torchvision_set(kind, root, download=False)
        return
    except Exception:  # a missing or corrupt copy (torchvision raises RuntimeError): try the download below
        pass
    if not download:
        raise FileNotFoundError(_unavailable(kind, root, "no local copy, and --data.download is false"))
    try:
        _torchvision_set(kind, root, download=True)
    except Exception as error:  # no network, proxy, HTTP errors, missing scipy for SVHN: all end the same way
        raise FileNotFoundError(_unavailable(kind, root, f"the download failed: {_one_line(error)}")) from None


def load_ood_images(kind: str, root: Path, size: int, seed: int) -> Tensor:
    """Build an OOD set as uint8 images.

    Args:
        kind: A non-``None`` value returned by :func:`resolve_ood`.
        root: The data directory (for ``cifar100`` and ``svhn``, already prepared by :func:`prepare_ood`).
        size: Number of images of a noise set; the other sets are used whole.
        seed: Seed of a noise set.

    Returns:
        ``(N, 3, 32, 32)`` uint8 images on the CPU.

    Raises:
        FileNotFoundError: If a torchvision set has no local copy, or a folder holds no image.
    """
    if kind in NOISE_SETS:
        return noise_images(kind, size, seed)
    if kind in DOWNLOAD_SETS:
        try:
            dataset = _torchvision_set(kind, root, download=False)
        except Exception as error:  # missing, corrupt, scipy absent
            raise FileNotFoundError(_unavailable(kind, root, _one_line(error))) from None
        data = np.asarray(dataset.data, dtype=np.uint8)  # CIFAR-100: (N, 32, 32, 3); SVHN: (N, 3, 32, 32)
        images = torch.from_numpy(data.transpose(0, 3, 1, 2) if kind == "cifar100" else data)
        return images.contiguous()
    return read_image_tree(Path(kind).expanduser())


def _decode(path: str) -> Tensor:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.array(image)).permute(2, 0, 1)
    except PermissionError:
        raise _unreadable(path) from None


def _decode_chunk(paths: Sequence[str]) -> Tensor:
    return torch.stack([_decode(path) for path in paths])


def read_image_tree(folder: Path) -> Tensor:
    """Decode every ``.png``/``.jpg``/``.jpeg`` file under ``folder`` (any depth, sorted by path) to 32x32 RGB.

    Images of another size are resized with bilinear filtering (PIL, antialiased); grey or RGBA images become RGB.

    Args:
        folder: The folder to search.

    Returns:
        ``(N, 3, 32, 32)`` uint8 images on the CPU.

    Raises:
        FileNotFoundError: If ``folder`` holds no image.
        PermissionError: If ``folder``, a folder below it or an image cannot be read (one line naming it).
    """
    _check_readable(folder)
    entries = list(folder.rglob("*"))
    for entry in entries:
        if entry.is_dir():  # rglob skips a folder it cannot read; say so rather than miss its images
            _check_readable(entry)
    paths = sorted(str(path) for path in entries if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not paths:
        raise FileNotFoundError(f"OOD folder {folder} holds no .png/.jpg/.jpeg image (searched all subfolders).")
    chunks = [paths[start : start + _DECODE_CHUNK] for start in range(0, len(paths), _DECODE_CHUNK)]
    # PIL releases the GIL while decoding and resizing, so threads overlap.
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 1) + 1)) as pool:
        return torch.cat(list(pool.map(_decode_chunk, chunks)))
