"""What every benchmark shares: naming the device, describing the software, writing results atomically."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_callbacks.engine.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: str) -> str:
    """The GPU's name on CUDA, else the processor's."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    """Where a result was measured: device, its name, and the versions and thread count that affect timings."""
    import lightning
    import torchmetrics

    cuda = device.startswith("cuda")
    return {
        "device": device,
        "device_name": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_threads": torch.get_num_threads(),
    }


def save_results(name: str, result: dict[str, Any], markdown: str, *, ci: bool, device: str) -> None:
    """Write ``results/<name>_[ci_]<device>.json`` and ``.md`` atomically (a crash leaves the old files whole)."""
    stem = RESULTS / f"{name}_{'ci_' if ci else ''}{device.split(':')[0]}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(stem.with_suffix(".md"), markdown)
