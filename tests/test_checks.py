"""Unit tests for the shared argument checks (engine/checks.py): what passes, and the exact message of what does not."""

from __future__ import annotations

import math
import re

import pytest

from pruning_callbacks.engine.checks import (
    check_choice,
    check_flag,
    check_int,
    check_number,
    check_path,
    finite_number,
    interval,
    optional_int,
)


def test_interval_brackets_follow_the_open_ends() -> None:
    assert interval(0, 1) == "[0, 1]"
    assert interval(0, 1, low_open=True) == "(0, 1]"
    assert interval(0, 0.75, high_open=True) == "[0, 0.75)"


def test_check_int() -> None:
    check_int("rounds", 1, 1)
    check_int("rounds", None, 1, allow_none=True)
    for bad in (0, True, 1.0, "2", None):
        with pytest.raises(ValueError, match=re.escape(f"rounds must be an integer >= 1, got {bad!r}.")):
            check_int("rounds", bad, 1)
    with pytest.raises(ValueError, match=re.escape("window must be an integer >= 2 or null, got 1.")):
        check_int("window", 1, 2, allow_none=True)


def test_check_number_returns_a_float_and_refuses_what_is_outside() -> None:
    assert check_number("alpha", 1, 0.0, 1.0, low_open=True) == 1.0 and isinstance(check_number("a", 1, 0, 1), float)
    for bad in (0, 0.0, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=re.escape(f"alpha must be in (0, 1], got {bad!r}.")):
            check_number("alpha", bad, 0.0, 1.0, low_open=True)
    for bad in (True, "0.5", None):
        with pytest.raises(ValueError, match=re.escape(f"alpha must be a number in (0, 1], got {bad!r}.")):
            check_number("alpha", bad, 0.0, 1.0, low_open=True)


def test_check_flag_and_choice() -> None:
    check_flag("stop", False)
    check_flag("prune", None, allow_none=True)
    with pytest.raises(ValueError, match=re.escape("stop must be true or false, got 'yes'.")):
        check_flag("stop", "yes")
    assert check_choice("reset", "rewind", ("rewind", "finetune")) == "rewind"
    with pytest.raises(ValueError, match=re.escape("reset must be one of rewind, finetune, got 'bogus'.")):
        check_choice("reset", "bogus", ("rewind", "finetune"))


def test_check_path_names_the_value_and_the_kind(tmp_path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"")
    check_path("dense_checkpoint", str(tmp_path / "weights.pt"), "file")
    check_path("masks_from", str(tmp_path), "folder")
    check_path("masks_from", None, "folder")
    with pytest.raises(ValueError, match=re.escape(f"dense_checkpoint {str(tmp_path)!r} is not a file")):
        check_path("dense_checkpoint", str(tmp_path), "file")
    missing = str(tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=re.escape(f"masks_from {missing!r} is not a folder; give a run")):
        check_path("masks_from", missing, "folder", "give a run")


def test_optional_int() -> None:
    assert optional_int(None) is None
    assert optional_int(3) == 3 and isinstance(optional_int(3.0), int)


def test_finite_number() -> None:
    assert finite_number(1) and finite_number(-0.5)
    assert not any(finite_number(value) for value in (True, "1", None, math.nan, math.inf, -math.inf))
