"""Shared fixtures: tiny synthetic CIFAR-10 on disk, the real archive when it is there."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.synthetic import write_image_folder

SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic CIFAR-10 image folder: 20 training and 10 test images per class."""
    root = tmp_path_factory.mktemp("synthetic_cifar10")
    write_image_folder(root, train_per_class=20, test_per_class=10, fmt="png")
    return root


REAL_TRAIN_PER_CLASS = 600
"""Training images per class extracted for the real-data test: 6,000 real images hold its 5,000 + 1,000 split, and
writing (then decoding) 6,000 files instead of 50,000 takes seconds off every suite run."""


@pytest.fixture(scope="session")
def real_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared JPEG copy of CIFAR-10: the whole test set and the first 600 training images of each class.

    Extracted once per session; skips when ../shared is absent.
    """
    if not SHARED_ARCHIVE.exists():
        pytest.skip(f"real CIFAR-10 archive not found at {SHARED_ARCHIVE}")
    root = tmp_path_factory.mktemp("cifar10_jpeg")
    taken: dict[str, int] = {}
    with tarfile.open(SHARED_ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if member.isfile() and "train" in parts[:-2]:
                label = parts[-2]
                if taken.get(label, 0) >= REAL_TRAIN_PER_CLASS:
                    continue
                taken[label] = taken.get(label, 0) + 1
            archive.extract(member, root, filter="data")
    return root
