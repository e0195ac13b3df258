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


@pytest.fixture(scope="session")
def real_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared JPEG copy of CIFAR-10, extracted once per session; skips when ../shared is absent."""
    if not SHARED_ARCHIVE.exists():
        pytest.skip(f"real CIFAR-10 archive not found at {SHARED_ARCHIVE}")
    root = tmp_path_factory.mktemp("cifar10_jpeg")
    with tarfile.open(SHARED_ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    return root
