"""One command, first run or resume: find a run directory's checkpoint and check that it belongs to this experiment.

``python cli.py fit --config X`` in a run directory that holds a checkpoint resumes from it; ``--fresh`` starts
over (the old directory is moved aside, never deleted). A run directory whose checkpoint belongs to another
experiment (another method or method settings, model, data or seed) is refused before anything in it is written.
``test`` and ``validate`` use the run directory's checkpoint when no ``--ckpt_path`` is given.

Everything here reads files and compares plain dictionaries; ``cli.py`` decides what to do with the answers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from pruning_callbacks.engine.checks import current_names

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
CONFIG = "config.yaml"

# Settings that may change between an interrupted run and its resume: how and where it runs, not what it computes.
MODEL_RUNTIME = ("channels_last", "compile", "compile_backend", "adv_samples", "adv_eps", "pgd_steps", "pgd_step_size")
DATA_RUNTIME = ("data_dir", "num_workers", "download", "gpu_resident", "eval_batch_size", "ood", "ood_size")
SHAPE = ("width", "num_classes")


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to resume from.

    Attributes:
        path: The checkpoint file.
        epoch: Epochs it had finished.
        global_step: Optimizer steps it had taken.
        fallback_from: The unreadable ``last.ckpt`` this replaces, if it does.
    """

    path: Path
    epoch: int
    global_step: int
    fallback_from: Path | None = None


def checkpoint_readable(path: Path) -> bool:
    """Whether ``path`` is a complete ``torch.save`` archive (a truncated write fails the zip's end record)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def epochs_done(checkpoint: Mapping[str, Any]) -> int:
    """How many training epochs a Lightning checkpoint had finished (its fit loop's processed epochs)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def resume_point(run_dir: str | os.PathLike[str]) -> ResumePoint | None:
    """The checkpoint a run in ``run_dir`` resumes from: ``checkpoints/last.ckpt``, else the newest readable one.

    Args:
        run_dir: The run directory (``trainer.default_root_dir``).

    Returns:
        ``None`` when the directory holds no checkpoint.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    last = folder / LAST
    candidates = sorted(
        (path for path in folder.glob("*.ckpt") if path.name != LAST), key=lambda path: path.stat().st_mtime
    )
    if not last.exists() and not candidates:
        return None
    ordered = ([last] if last.exists() else []) + candidates[::-1]
    for path in ordered:
        if not checkpoint_readable(path):
            continue
        try:
            checkpoint = _load(path)
        except Exception:  # readable as a zip but not as a checkpoint
            continue
        fallback = last if path != last and last.exists() else None
        return ResumePoint(path, epochs_done(checkpoint), int(checkpoint.get("global_step", 0)), fallback)
    names = ", ".join(path.name for path in ordered)
    raise ValueError(f"no readable checkpoint in {folder} ({names} are all unreadable); start over with --fresh")


def resume_point_exists(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds any checkpoint (readable or not)."""
    return any((Path(run_dir) / CHECKPOINT_DIR).glob("*.ckpt"))


def move_aside(run_dir: str | os.PathLike[str]) -> Path | None:
    """Rename ``run_dir`` to ``<run_dir>.replaced-<UTC time>`` (for ``--fresh``); ``None`` if it does not exist."""
    path = Path(run_dir)
    if not path.exists():
        return None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    path.rename(target)
    return target


def saved_config(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.yaml`` a ``fit`` wrote into ``run_dir``, or ``None``."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    with open(path) as file:
        content = yaml.safe_load(file)
    return content if isinstance(content, dict) else None


def plain(value: Any) -> Any:
    """A JSON-compatible copy (namespaces and paths become dicts and strings), for comparison."""
    return json.loads(json.dumps(value, default=str))


def _methods(config: Mapping[str, Any], is_method: Any) -> list[dict[str, Any]]:
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    if isinstance(callbacks, Mapping):
        callbacks = [callbacks]
    methods = []
    for item in callbacks:
        if isinstance(item, Mapping) and is_method(str(item.get("class_path", ""))):
            class_path = str(item["class_path"])
            init_args = current_names(_short(class_path), dict(item.get("init_args") or {}))
            methods.append({"class_path": class_path, "init_args": init_args})
    return methods


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _section_differences(
    name: str, old: Mapping[str, Any], new: Mapping[str, Any], allowed: Iterable[str]
) -> list[str]:
    skip = set(allowed)
    found = []
    for key in sorted(set(old) | set(new)):
        if key in skip or key.startswith("_"):
            continue
        if old.get(key) != new.get(key):
            found.append(f"{name}.{key} {old.get(key)!r} -> {new.get(key)!r}")
    return found


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], is_method: Any) -> list[str]:
    """What makes ``new`` another experiment than ``old``: method and its settings, model, data, seed.

    How the run is executed may change (the Trainer's devices, epochs, precision, logging; the data's location and
    workers; the model's speed options and evaluation attacks).

    Args:
        old: The saved config of the run directory.
        new: The config of this command.
        is_method: ``class_path -> bool``: whether a callback is a pruning method (others, like a progress bar, are
            free to change).

    Returns:
        One short description per difference, empty when the configs describe the same experiment.
    """
    old, new = plain(old), plain(new)
    found: list[str] = []
    old_methods, new_methods = _methods(old, is_method), _methods(new, is_method)
    old_names = [_short(item["class_path"]) for item in old_methods]
    new_names = [_short(item["class_path"]) for item in new_methods]
    if old_names != new_names:
        found.append(f"method {'+'.join(old_names) or 'dense'} -> {'+'.join(new_names) or 'dense'}")
    else:
        for before, after in zip(old_methods, new_methods, strict=True):
            found += _section_differences(_short(before["class_path"]), before["init_args"], after["init_args"], ())
    found += _section_differences("model", old.get("model") or {}, new.get("model") or {}, MODEL_RUNTIME)
    found += _section_differences("data", old.get("data") or {}, new.get("data") or {}, DATA_RUNTIME)
    if old.get("seed_everything") != new.get("seed_everything"):
        found.append(f"seed_everything {old.get('seed_everything')!r} -> {new.get('seed_everything')!r}")
    return found


def checkpoint_shape_mismatch(path: str | os.PathLike[str], model: Mapping[str, Any]) -> list[str]:
    """The model-shape settings (``width``, ``num_classes``) in which checkpoint ``path`` differs from ``model``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not checkpoint_readable(path):
        raise ValueError(f"checkpoint {path} is not readable (a truncated or foreign file)")
    saved = _load(path).get("hyper_parameters") or {}
    return [
        f"model.{key} {saved[key]!r} in the checkpoint, {model.get(key)!r} in the config"
        for key in SHAPE
        if key in saved and key in model and saved[key] != model[key]
    ]
