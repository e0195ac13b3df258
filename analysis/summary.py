"""``summary.json``: what a run did and what it measured, written by every ``fit`` and ``test``.

:class:`RunSummary` is added to every run by ``cli.py`` (options under ``--summary.*``). It writes, into the run's
log directory (``trainer.log_dir``, which ``cli.py`` makes ``trainer.default_root_dir``):

* ``summary.json``: the method and its settings, the seed, global and per-layer sparsity, remaining weights,
  dense and sparse model sizes, dense and sparse inference FLOPs, training FLOPs, the logged ``val/*`` and
  ``test/*`` metrics and, for multi-round methods, the rounds;
* ``model.sparse.pt``: the sparse export (:mod:`analysis.export`) whose file size is the "sparse size".

``fit`` and ``test`` update the same file: each keeps what the other wrote, so ``fit`` then ``test`` leaves one
complete summary. Files are written atomically, so a crash never leaves a half-written summary behind.

FLOPs follow Evci et al. 2020 (RigL, https://arxiv.org/abs/1911.11134, appendix H): inference FLOPs of a sparse
model are each layer's dense FLOPs times its density, and a training step costs three forward passes at the
current density (RigL adds its periodic dense gradients). Counts come from :mod:`torch.utils.flop_counter`
(a multiply-add is two FLOPs), per image of ``3 × 32 × 32``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from analysis.export import dense_size_bytes, export_sparse
from analysis.flops import FlopCount, layer_flops, sparse_forward_flops
from pruning_callbacks import EarlyBird, MaskedTraining
from pruning_callbacks.engine.io import atomic_write_text
from pruning_callbacks.engine.parameters import prunable_parameters

SUMMARY_VERSION = 1
MB = 1e6
"""Sizes are reported in megabytes of 10^6 bytes."""


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``summary.json``.

    Raises:
        ValueError: If the file is not a JSON object.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            summary = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds a JSON {type(summary).__name__}, expected an object")
    return summary


def is_complete(summary: Mapping[str, Any]) -> bool:
    """Whether a run finished ``fit`` and then ``test`` on the weights ``fit`` ended with."""
    fit, test = summary.get("fit") or {}, summary.get("test") or {}
    return bool(fit.get("completed") and test.get("completed") and test.get("global_step") == fit.get("global_step"))


def jsonable(value: Any) -> Any:
    """Convert config values (tuples, tensors, paths, namespaces) into JSON types."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "as_dict"):
        return jsonable(value.as_dict())
    return str(value)


def fit_completed(trainer: Trainer) -> bool:
    """Whether ``fit`` ran to its end, rather than being cut short by ``trainer.max_time``."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    if timer is None:
        return True
    remaining = timer.time_remaining("train")
    return remaining is None or remaining > 0


class RunSummary(Callback):
    """Write ``summary.json`` (and the sparse export it measures) at the end of every ``fit`` and ``test``.

    Args:
        label: The name this run is grouped under in reports; ``None`` means the config file's name (``cli.py``
            sets it) or the pruning method's class name (``dense`` without one).
        filename: Name of the summary inside the run's log directory.
        export_sparse: Also write the sparse export and report its real file size.
        sparse_filename: Name of the sparse export inside the run's log directory.

    Raises:
        ValueError: If a file name is empty or has a directory part.
    """

    def __init__(
        self,
        label: str | None = None,
        filename: str = "summary.json",
        export_sparse: bool = True,
        sparse_filename: str = "model.sparse.pt",
    ) -> None:
        for argument, value in (("filename", filename), ("sparse_filename", sparse_filename)):
            if not value or os.path.basename(value) != value:
                raise ValueError(f"{argument} must be a plain file name without a directory, got {value!r}")
        if label is not None and not label.strip():
            raise ValueError("label must be a non-empty string or null")
        self.label = label
        self.filename = filename
        self.export_sparse = export_sparse
        self.sparse_filename = sparse_filename
        self.run_info: dict[str, Any] = {}
        """Set by ``cli.py``: ``config_files``, ``label`` and ``callbacks`` (class paths and init args)."""
        self.training_flops = 0.0
        self.training_samples = 0
        self._epoch_samples = 0
        self._epoch_start_step = 0
        self._flops: FlopCount | None = None
        self._checkpoint_step: int | None = None

    # ------------------------------------------------------------------ hooks
    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_samples = 0
        self._epoch_start_step = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_samples += _batch_size(batch)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Masks are fixed through an epoch for every method here (rounds change at epoch starts, RigL and SET keep
        # each layer's count), so the epoch's density is the one at its end. Runs before the checkpoint is saved.
        samples = self._epoch_samples * trainer.world_size
        middle_step = (self._epoch_start_step + trainer.global_step) // 2
        self.training_flops += samples * self._training_flops_per_sample(trainer, pl_module, middle_step)
        self.training_samples += samples
        self._epoch_samples = 0

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.interrupted:
            self._write(trainer, pl_module, "fit")

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module, "test")

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # ``test`` does not restore the loop counters, so the tested weights' step is read from the checkpoint.
        step = checkpoint.get("global_step")
        self._checkpoint_step = int(step) if step is not None else None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"training_flops": self.training_flops, "training_samples": self.training_samples}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.training_flops = float(state_dict.get("training_flops", 0.0))
        self.training_samples = int(state_dict.get("training_samples", 0))

    # ------------------------------------------------------------------ internals
    def _flop_count(self, pl_module: LightningModule) -> FlopCount:
        if self._flops is None:
            self._flops = layer_flops(pl_module)
        return self._flops

    def _training_flops_per_sample(self, trainer: Trainer, pl_module: LightningModule, step: int) -> float:
        count = self._flop_count(pl_module)
        method = _masking_callback(trainer)
        if method is None or method.masks is None:
            return 3.0 * count.total
        # Only weights have FLOPs; a channel method also masks BatchNorm scales and shifts.
        densities = {
            name: 1.0 - value for name, value in method.masks.layer_sparsity().items() if name in count.per_weight
        }
        sparse = sparse_forward_flops(count, densities)
        return method.training_flops_per_sample(sparse, float(count.total), step)

    def _write(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks (so does build), only rank 0 writes
        if log_dir is None:
            return
        summary = self.build(trainer, pl_module, stage)
        if not trainer.is_global_zero:
            return
        path = os.path.join(log_dir, self.filename)
        previous: dict[str, Any] = {}
        if os.path.exists(path):
            try:
                previous = read_summary(path)
            except ValueError:
                previous = {}
        fit_now, fit_before = summary.get("fit") or {}, previous.get("fit") or {}
        unchanged = stage == "fit" and fit_before.get("global_step") == fit_now.get("global_step")
        if unchanged and not fit_now.get("metrics") and fit_before.get("metrics"):
            # A resume with nothing left to train ran no epoch, so Lightning has no metrics in memory; the weights
            # are those the earlier fit measured, so its metrics (and its test) still describe them.
            summary["fit"] = {**fit_now, "metrics": fit_before["metrics"]}
        elif stage == "fit":
            previous.pop("test", None)  # the weights changed: an older test no longer describes them
        for key, value in summary.items():
            # One level deep, so that ``test`` keeps what only ``fit`` measures (training FLOPs).
            if isinstance(value, dict) and isinstance(previous.get(key), dict) and key not in ("fit", "test"):
                previous[key] = {**previous[key], **value}
            else:
                previous[key] = value
        os.makedirs(log_dir, exist_ok=True)
        atomic_write_text(path, json.dumps(jsonable(previous), indent=2) + "\n")
        rank_zero_info(f"RunSummary: wrote {path}")

    def build(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> dict[str, Any]:
        """Return this stage's part of the summary (and write the sparse export on rank 0).

        Args:
            trainer: The trainer.
            pl_module: The module.
            stage: ``fit`` or ``test``.
        """
        method = _masking_callback(trainer)
        params = prunable_parameters(pl_module)
        if method is not None and method.masks is not None:
            all_masks = {name: mask.detach().cpu() for name, mask in method.masks.items()}
            # The sparsity is that of the prunable weights; a channel method's BatchNorm masks go to the export only.
            masks = {name: mask for name, mask in all_masks.items() if name in params} or all_masks
        else:
            # No masks (a dense run, or a method without a mask engine): what is zero is what is pruned.
            masks = {name: (param.detach() != 0).cpu() for name, param in params.items()}
        per_layer = {
            name: {
                "sparsity": 1.0 - float(mask.float().mean()),
                "remaining": int(mask.sum()),
                "total": mask.numel(),
            }
            for name, mask in masks.items()
        }
        remaining = sum(layer["remaining"] for layer in per_layer.values())
        total = sum(layer["total"] for layer in per_layer.values())
        parameters = sum(param.numel() for param in pl_module.parameters())
        count = self._flop_count(pl_module)
        densities = {name: 1.0 - layer["sparsity"] for name, layer in per_layer.items()}

        state_dict = {name: tensor.detach().cpu() for name, tensor in pl_module.state_dict().items()}
        size: dict[str, Any] = {"dense_mb": dense_size_bytes(state_dict) / MB}
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks, only rank 0 writes
        if self.export_sparse and trainer.is_global_zero and log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            result = export_sparse(
                state_dict,
                os.path.join(log_dir, self.sparse_filename),
                masks=all_masks if method is not None and method.masks is not None else masks,
            )
            size.update(sparse_mb=result.sparse_bytes / MB, sparse_file=self.sparse_filename)
            size["sparse_over_dense"] = result.sparse_bytes / result.dense_bytes

        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(("test/",) if stage == "test" else ("val/", "train/"))
            if isinstance(value, (float, int)) or (isinstance(value, Tensor) and value.numel() == 1)
        }
        summary: dict[str, Any] = {
            "format_version": SUMMARY_VERSION,
            "label": self._label(method),
            "method": self._method(trainer),
            "seed": _seed(),
            "config_files": self.run_info.get("config_files", []),
            "model": _hparams(pl_module),
            "data": _hparams(trainer.datamodule) if trainer.datamodule is not None else {},
            "sparsity": {
                "global": 1.0 - remaining / total if total else 0.0,
                "remaining_weights": remaining,
                "prunable_weights": total,
                "parameters": parameters,
                "remaining_parameters": parameters - (total - remaining),
                "per_layer": per_layer,
            },
            "size": size,
            "flops": {
                "dense_forward": count.total,
                "sparse_forward": sparse_forward_flops(count, densities),
                "per_image": "3x32x32",
            },
        }
        rounds = _rounds(trainer)
        if rounds is not None:
            summary["rounds"] = rounds
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        if stage == "fit":
            summary["flops"]["training_total"] = self.training_flops
            summary["flops"]["training_dense_equivalent"] = 3.0 * count.total * self.training_samples
            summary["fit"] = {
                "completed": fit_completed(trainer),
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "training_samples": self.training_samples,
                "metrics": metrics,
                "finished_at": now,
            }
        else:
            summary["test"] = {
                "completed": True,
                "global_step": self._checkpoint_step if self._checkpoint_step is not None else trainer.global_step,
                "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
                "metrics": metrics,
                "finished_at": now,
            }
        return summary

    def _label(self, method: MaskedTraining | None) -> str:
        if self.label:
            return self.label
        if self.run_info.get("label"):
            return str(self.run_info["label"])
        return type(method).__name__ if method is not None else "dense"

    def _method(self, trainer: Trainer) -> dict[str, Any]:
        configured = self.run_info.get("callbacks") or []
        methods = [cb for cb in trainer.callbacks if isinstance(cb, (MaskedTraining, EarlyBird))]
        if not methods:
            return {"name": "dense", "callbacks": []}
        described = []
        for callback in methods:
            class_path = f"{type(callback).__module__}.{type(callback).__name__}"
            settings = next(
                (
                    item.get("init_args", {})
                    for item in configured
                    if str(item.get("class_path", "")).rsplit(".", 1)[-1] == type(callback).__name__
                ),
                {},
            )
            entry = {"name": type(callback).__name__, "class_path": class_path, "settings": jsonable(settings)}
            outcome = getattr(callback, "summary_info", None)
            if callable(outcome):
                entry["outcome"] = jsonable(outcome())
            described.append(entry)
        return {"name": "+".join(item["name"] for item in described), "callbacks": described}


def _masking_callback(trainer: Trainer) -> MaskedTraining | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, MaskedTraining)), None)


def _rounds(trainer: Trainer) -> list[dict[str, Any]] | None:
    for callback in trainer.callbacks:
        rows = getattr(callback, "rows", None)
        if isinstance(callback, MaskedTraining) and isinstance(rows, list) and rows:
            return [jsonable(dict(row)) for row in rows]
    return None


def _hparams(owner: Any) -> dict[str, Any]:
    return {key: jsonable(value) for key, value in dict(owner.hparams).items() if not key.startswith("_")}


def _seed() -> int | None:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return int(batch[0].shape[0])
    return 0
