"""The module paths of the flat layout before ``engine/`` and ``callbacks/``, kept importable for one release.

``pruning_callbacks.dynamic``, ``pruning_callbacks.masks``, ``pruning_callbacks.iterative`` and the rest still import,
with a :class:`DeprecationWarning` that names the new module, so old code and old configs (``class_path:
pruning_callbacks.dynamic.RigL``) keep working. Each old path is a module that looks its names up in the new ones.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

from pruning_callbacks.engine.checks import ToolkitDeprecationWarning

ENGINE = (
    "apply", "channels", "distributions", "io", "masks", "parameters", "regrowth", "schedules", "scores", "seeding",
    "selection", "tracking",
)  # fmt: skip
CALLBACKS = ("base", "dynamic", "early_bird", "filters", "monitor", "plotting", "prune_at_init", "scheduled")
MOVED: dict[str, tuple[str, ...]] = {
    **{name: (f"engine.{name}",) for name in ENGINE},
    **{name: (f"callbacks.{name}",) for name in CALLBACKS},
    "init_pruning": ("engine.recipes", "callbacks.batches"),
    "iterative": ("callbacks.rounds", "callbacks.imp", "callbacks.round_records", "engine.parameters"),
}
"""Old submodule name -> the new modules (under ``pruning_callbacks``) that now hold its names."""

PACKAGE = "pruning_callbacks"


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``pruning_callbacks.<old name>`` as a module that forwards to the new modules, with a warning."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path; ``None`` for everything else."""
        package, _, name = fullname.partition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        """Use the default module object."""
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        """Warn, then make ``module`` look its attributes up in the new modules, in order."""
        name = module.__name__.partition(".")[2]
        new = [f"{PACKAGE}.{target}" for target in MOVED[name]]
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(new)}; import from there (or from {PACKAGE}). "
            "The old path will be removed in the next release.",
            ToolkitDeprecationWarning,
            stacklevel=2,
        )
        targets = [importlib.import_module(target) for target in new]

        def forward(attribute: str) -> Any:
            for target in targets:
                if hasattr(target, attribute):
                    return getattr(target, attribute)
            raise AttributeError(f"module {module.__name__!r} has no attribute {attribute!r}")

        module.__getattr__ = forward  # type: ignore[method-assign]
        module.__doc__ = f"Deprecated: moved to {', '.join(new)}."


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
