"""The layering rule: the engine is plain torch; callbacks build on it; nothing else reaches into callback internals.

* ``pruning_callbacks/engine/`` imports no Lightning and no project module outside the engine;
* ``pruning_callbacks/callbacks/`` imports the engine, ``lightning_compat`` and other callbacks, never
  ``analysis``, ``lit_modules`` or ``datamodules``;
* ``datamodules``, ``lit_modules`` and ``analysis`` may import the engine and the package's public names
  (``from pruning_callbacks import RigL``), never ``pruning_callbacks.callbacks.*``; ``lit_modules`` and
  ``datamodules`` never import ``analysis``;
* no module outside ``pruning_callbacks/lightning_compat.py`` touches a private attribute of a Lightning object.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import REPO

ENGINE_DIR = REPO / "pruning_callbacks" / "engine"
CALLBACKS_DIR = REPO / "pruning_callbacks" / "callbacks"
ENGINE = sorted(path.stem for path in ENGINE_DIR.glob("*.py") if path.stem != "__init__")
CALLBACKS = sorted(path.stem for path in CALLBACKS_DIR.glob("*.py") if path.stem != "__init__")
SOURCE_FOLDERS = ("pruning_callbacks", "lit_modules", "datamodules", "analysis")
COMPAT = REPO / "pruning_callbacks" / "lightning_compat.py"


def source_files() -> list[Path]:
    files = [REPO / "cli.py"]
    for folder in SOURCE_FOLDERS:
        files.extend(sorted((REPO / folder).rglob("*.py")))
    return files


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
    return modules


def test_the_layers_hold_their_modules():
    assert {"masks", "scores", "schedules", "recipes", "checks", "seeding", "io"} <= set(ENGINE)
    assert {"base", "scheduled", "rounds", "dynamic", "prune_at_init", "early_bird"} <= set(CALLBACKS)


@pytest.mark.parametrize("name", ENGINE)
def test_engine_modules_import_no_lightning_and_only_other_engine_modules(name):
    modules = imported_modules(ENGINE_DIR / f"{name}.py")
    assert not [module for module in modules if module.split(".")[0] in ("lightning", "pytorch_lightning")]
    project = {module for module in modules if module.split(".")[0] in (*SOURCE_FOLDERS, "cli")}
    assert all(module.startswith("pruning_callbacks.engine.") for module in project), project


@pytest.mark.parametrize("name", CALLBACKS)
def test_callbacks_import_the_engine_and_compat_only(name):
    project = {
        module
        for module in imported_modules(CALLBACKS_DIR / f"{name}.py")
        if module.split(".")[0] in (*SOURCE_FOLDERS, "cli")
    }
    allowed = ("pruning_callbacks.engine.", "pruning_callbacks.callbacks.", "pruning_callbacks.lightning_compat")
    assert all(module.startswith(allowed) for module in project), project


@pytest.mark.parametrize("folder", ["datamodules", "lit_modules", "analysis"])
def test_other_folders_never_import_callback_internals(folder):
    for path in sorted((REPO / folder).rglob("*.py")):
        modules = imported_modules(path)
        assert not [module for module in modules if module.startswith("pruning_callbacks.callbacks")], path
        if folder != "analysis":
            assert not [module for module in modules if module.split(".")[0] == "analysis"], path


@cache
def lightning_private_names() -> frozenset[str]:
    """Every private (single-underscore) attribute of the Lightning objects this project meets."""
    from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.cli import LightningCLI

    names: set[str] = set()

    def collect(obj: object, depth: int, seen: set[int]) -> None:
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        for klass in type(obj).__mro__:
            if klass.__module__.startswith("lightning"):
                names.update(name for name in vars(klass) if name.startswith("_") and not name.startswith("__"))
        for key, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
            if key.startswith("_") and not key.startswith("__"):
                names.add(key)
            if type(value).__module__.startswith("lightning"):
                collect(value, depth + 1, seen)

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    for obj in (trainer, LightningModule(), LightningDataModule(), Callback()):
        collect(obj, 0, set())
    for klass in LightningCLI.__mro__:
        if klass.__module__.startswith("lightning"):
            names.update(name for name in vars(klass) if name.startswith("_") and not name.startswith("__"))
    return frozenset(names)


def test_lightning_private_names_are_found():
    names = lightning_private_names()
    assert {"_logger_connector", "_data_source", "_trainer", "_apply_batch_transfer_handler"} <= names
    assert {"_instantiate_trainer", "_parse_ckpt_path"} <= names


def test_only_lightning_compat_touches_lightning_internals():
    names = lightning_private_names()
    offenders = []
    for path in source_files():
        if path == COMPAT:
            continue
        tree = ast.parse(path.read_text())
        methods = [item for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for item in node.body]
        for node in [*ast.walk(tree), *methods]:
            touched = None
            if isinstance(node, ast.Attribute) and node.attr in names:
                touched = node.attr
            elif isinstance(node, ast.FunctionDef) and node in methods and node.name in names:
                touched = node.name  # a method of the same name overrides (or shadows) a private Lightning one
            if touched is not None:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {touched}")
    assert not offenders, offenders


def test_compat_is_the_one_module_that_does():
    names = lightning_private_names()
    touched = {node.attr for node in ast.walk(ast.parse(COMPAT.read_text())) if isinstance(node, ast.Attribute)}
    assert touched & names
