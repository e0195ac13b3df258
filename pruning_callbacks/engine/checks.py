"""The argument checks every layer shares, each raising one ``ValueError`` that names the value and what is allowed.

The CLI turns such an error into its one line, ``error: <what, the value, what is allowed>``; keeping the wording in
one place keeps every callback's and every schedule's messages alike.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")
C = TypeVar("C", bound=type)


class ToolkitDeprecationWarning(DeprecationWarning):
    """A name or option of this toolkit that still works for one release.

    ``cli.py`` shows these, which Python would otherwise hide (it shows ``DeprecationWarning`` only for code run as
    ``__main__``).
    """


def interval(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> str:
    """``[low, high]`` with round brackets on the open ends, numbers in ``%g``."""
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_int(name: str, value: object, minimum: int, *, allow_none: bool = False) -> None:
    """Require an integer (not a bool) of at least ``minimum``, or ``None`` with ``allow_none``.

    Raises:
        ValueError: ``<name> must be an integer >= <minimum>[ or null], got <value>.``
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        suffix = " or null" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}.")


def finite_number(value: object) -> bool:
    """Whether ``value`` is a real, finite number (not a bool, a string, NaN or infinity)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_number(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """Require a finite real number (not a bool) in the interval from ``low`` to ``high``; return it as a float.

    Raises:
        ValueError: ``<name> must be in <interval>, got <value>.`` (NaN and infinities included; ``must be a number
            in`` for what is not a number).
    """
    allowed = interval(low, high, low_open=low_open, high_open=high_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in {allowed}, got {value!r}.")
    if (
        not finite_number(value)
        or (value <= low if low_open else value < low)
        or (value >= high if high_open else value > high)
    ):
        raise ValueError(f"{name} must be in {allowed}, got {value!r}.")
    return float(value)


def check_flag(name: str, value: object, *, allow_none: bool = False) -> None:
    """Require ``True`` or ``False`` (or ``None`` with ``allow_none``).

    Raises:
        ValueError: ``<name> must be true or false, got <value>.``
    """
    if not isinstance(value, bool) and not (allow_none and value is None):
        raise ValueError(f"{name} must be true or false, got {value!r}.")


def check_path(name: str, value: str | None, kind: str, hint: str = "") -> None:
    """Require ``value`` to be an existing file (``kind="file"``) or folder (``kind="folder"``), or ``None``.

    Raises:
        ValueError: ``<name> <value> is not a <kind>`` and ``hint``, when given.
    """
    if value is not None and not (os.path.isfile if kind == "file" else os.path.isdir)(value):
        raise ValueError(f"{name} {value!r} is not a {kind}{'; ' + hint if hint else ''}")


def check_choice(name: str, value: object, allowed: Iterable[str]) -> str:
    """Require one of ``allowed``; return it.

    Raises:
        ValueError: ``<name> must be one of <a, b, c>, got '<value>'.``
    """
    choices = tuple(allowed)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value


def optional_int(value: object) -> int | None:
    """``int(value)``, or ``None`` for ``None``: how a restored callback state reads an optional step or epoch."""
    return None if value is None else int(value)  # type: ignore[call-overload]


def renamed(owner: str, old: str, new: str, old_value: T | None, new_value: T, default: T) -> T:
    """The value of an argument that was renamed, taking the old name for one release with a deprecation warning.

    Callbacks keep the old name as a keyword argument defaulting to ``None`` (so that configs written for the last
    release still load through LightningCLI) and resolve both through this function.

    Args:
        owner: The class, for the messages.
        old: The old argument name.
        new: The new argument name.
        old_value: What the old name was given (``None`` when not given).
        new_value: What the new name was given.
        default: The new argument's default (to tell whether it was given too).

    Raises:
        ValueError: If both names are given different values.
    """
    if old_value is None:
        return new_value
    warnings.warn(
        f"{owner}: {old} is now called {new}; the old name will be removed in the next release",
        ToolkitDeprecationWarning,
        stacklevel=3,
    )
    if new_value != default and new_value != old_value:
        raise ValueError(f"{owner}: give {new} ({new_value!r}) or its old name {old} ({old_value!r}), not both")
    return old_value


def renamed_fields(cls: C, **old_to_new: str) -> C:
    """Let a (dataclass) constructor take the old names of renamed fields for one release, with a warning."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for old, new in old_to_new.items():
            if old in kwargs:
                if new in kwargs:
                    raise ValueError(f"{cls.__name__}: give {new} or its old name {old}, not both")
                warnings.warn(
                    f"{cls.__name__}.{old} is now called {new}; the old name will be removed in the next release",
                    ToolkitDeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


RENAMED_ARGUMENTS: dict[str, dict[str, str]] = {
    "IterativePruning": {"criterion": "score"},
    "FilterPruning": {"criterion": "score"},
    "HanMagnitude": {"iterations": "rounds"},
    "DynamicSparseTraining": {"delta_t": "update_every"},
    "RigL": {"delta_t": "update_every"},
    "SET": {"delta_t": "update_every"},
}
"""Per method class, the constructor arguments renamed in this release (old name -> new name)."""


def current_names(class_name: str, init_args: dict[str, Any]) -> dict[str, Any]:
    """A method's settings with renamed arguments under their new names (an unset old name dropped).

    What a saved config of the release before is compared as, so that a run started then resumes now.

    Args:
        class_name: The method's class name (``RigL``).
        init_args: Its settings, as a config holds them.
    """
    args = dict(init_args)
    for old, new in RENAMED_ARGUMENTS.get(class_name, {}).items():
        value = args.pop(old, None)
        if value is not None:
            args[new] = value
    return args
