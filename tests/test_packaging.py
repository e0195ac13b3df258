"""The project's package list: a non-editable ``pip install .`` must ship every package, subpackages included."""

from __future__ import annotations

import pytest
from setuptools import find_packages

from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_every_package_with_an_init_is_installed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    installed = set(find_packages(str(REPO), include=find["include"]))
    on_disk = {
        ".".join(path.parent.relative_to(REPO).parts)
        for top in ("analysis", "pruning_callbacks", "lit_modules", "datamodules")
        for path in (REPO / top).rglob("__init__.py")
    }
    assert {"pruning_callbacks.engine", "pruning_callbacks.callbacks"} <= on_disk
    assert on_disk == installed, on_disk ^ installed
