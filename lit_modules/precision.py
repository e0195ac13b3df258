"""The automatic speed settings: which precision a run gets when its config sets none, and when channels_last is on.

A run whose config leaves ``trainer.precision`` unset trains in the fastest precision that is safe on the device it
runs on (:func:`auto_precision`):

* on a CUDA GPU, ``bf16-mixed`` where the GPU computes bf16 natively, else ``16-mixed``;
* on a CPU, ``bf16-mixed`` where oneDNN computes bf16 natively (AVX512-BF16 or AMX on x86, the BF16 extension on Arm:
  :func:`cpu_computes_bf16`), else ``32-true``.

``channels_last`` follows (:func:`channels_last_by_default`): on for CUDA, and on a CPU exactly when the precision is
bf16, because oneDNN's bf16 convolutions are fastest in channels-last layout (``benchmarks/cpu_precision.py`` times
bf16 in both layouts against fp32); fp32 on a CPU keeps the contiguous layout CPU runs have always had.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")
"""``platform.machine()`` names of x86 processors, where oneDNN's bf16 query also says yes for emulated bf16."""
NATIVE_X86_BF16 = ("avx512_bf16", "amx_bf16")
"""x86 instruction sets that compute bf16 dot products in hardware (``torch.cpu.get_capabilities()`` keys)."""


@dataclass(frozen=True)
class AutoPrecision:
    """The precision chosen for a run whose config sets none, and why.

    Attributes:
        precision: The Lightning precision flag: ``bf16-mixed``, ``16-mixed`` or ``32-true``.
        device: The device type it was chosen for: ``cpu`` or ``cuda``.
        reason: Why, in a few words for the start line (``this CPU's oneDNN computes bf16``).
    """

    precision: str
    device: str
    reason: str


def cuda_computes_bf16() -> bool:
    """Whether the CUDA GPU computes bf16 natively (a T4 only emulates it, slowly: it gets ``16-mixed``)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before the including_emulation argument
        return torch.cuda.is_bf16_supported()


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bf16 natively through oneDNN, so that ``bf16-mixed`` trains faster than fp32.

    The one place that asks torch's private capability queries. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says
    whether oneDNN can run bf16 at all; on x86 it also says yes for any AVX-512 processor (Skylake, Cascade Lake),
    where oneDNN emulates bf16, typically slower than fp32, so there the processor must also have AVX512-BF16 or
    AMX-BF16 (``torch.cpu.get_capabilities()``, or the private ``torch.cpu._is_avx512_bf16_supported()`` and
    ``torch.cpu._is_amx_tile_supported()`` on a torch that predates it). On Arm the oneDNN query itself checks for
    the BF16 extension. Any query that is missing or fails gives ``False``: fp32 is always correct.

    Returns:
        ``True`` where bf16 autocast is the fast path on this CPU.
    """
    if not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled:
        return False
    try:
        if not bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        if platform.machine().lower() not in X86_MACHINES:
            return True
        get_capabilities = getattr(torch.cpu, "get_capabilities", None)
        if get_capabilities is not None:
            capabilities = get_capabilities()
            return any(bool(capabilities.get(name, False)) for name in NATIVE_X86_BF16)
        return bool(torch.cpu._is_avx512_bf16_supported()) or bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def _resolved_device(accelerator: object) -> str | None:
    """``cuda`` or ``cpu``: where a Trainer with this ``accelerator`` flag trains; ``None`` for anything else."""
    if not isinstance(accelerator, str):
        return None  # an Accelerator instance: the user chose, nothing to guess
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    if accelerator == "cpu" or (accelerator == "auto" and not torch.backends.mps.is_available()):
        return "cpu"
    return None


def auto_precision(accelerator: object) -> AutoPrecision | None:
    """The precision for a run that sets none, on the device ``accelerator`` resolves to.

    Args:
        accelerator: The Trainer's ``accelerator`` flag (``auto``, ``cpu``, ``gpu``, ``cuda``, ...).

    Returns:
        The choice, or ``None`` where the run goes to another device (Apple MPS, an accelerator instance), which keeps
        Lightning's default.
    """
    device = _resolved_device(accelerator)
    if device == "cuda":
        if cuda_computes_bf16():
            return AutoPrecision("bf16-mixed", "cuda", "this GPU computes bf16")
        return AutoPrecision("16-mixed", "cuda", "this GPU has no native bf16")
    if device == "cpu":
        if cpu_computes_bf16():
            return AutoPrecision("bf16-mixed", "cpu", "this CPU's oneDNN computes bf16")
        return AutoPrecision("32-true", "cpu", "this CPU's oneDNN has no native bf16")
    return None


def channels_last_by_default(device_type: str, precision: str) -> bool:
    """Whether ``model.channels_last: null`` means on: always on CUDA, on a CPU only with bf16.

    Args:
        device_type: The training device's type (``trainer.strategy.root_device.type``).
        precision: The Trainer's precision flag (``trainer.precision``).
    """
    return device_type == "cuda" or (device_type == "cpu" and str(precision).startswith("bf16"))
