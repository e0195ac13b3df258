"""The engine is plain torch: its modules import no Lightning, directly or through another project module."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import REPO

ENGINE = (
    "apply", "channels", "distributions", "io", "masks", "parameters", "regrowth", "schedules", "scores", "seeding",
    "selection", "tracking",
)  # fmt: skip


def imported_modules(name: str) -> set[str]:
    tree = ast.parse((REPO / "pruning_callbacks" / f"{name}.py").read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("name", ENGINE)
def test_engine_modules_import_no_lightning_and_only_other_engine_modules(name):
    modules = imported_modules(name)
    assert not [module for module in modules if module.split(".")[0] in ("lightning", "pytorch_lightning")]
    project = {module.split(".")[1] for module in modules if module.startswith("pruning_callbacks.")}
    assert project <= set(ENGINE), project - set(ENGINE)
    assert not [module for module in modules if module.split(".")[0] in ("analysis", "lit_modules", "datamodules")]
