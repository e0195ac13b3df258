"""Export a pruned model as a compact sparse file or a channel-slimmed network, to a dense state dict, to ONNX.

The sparse file is a ``torch.save`` of plain dicts, lists, strings, numbers and tensors, so it loads with
``torch.load(path, weights_only=True)``::

    {
        "format": "lightning-pruning/sparse-state-dict",
        "version": 1,
        "metadata": {"source": str, "sparsity": float, "pruned_weights": int, "total_weights": int,
                     "sparse_tensors": int, "bit_order": "little", "torch_version": str},
        "tensors": {name: tensor | {"shape": [int, ...], "dtype": "float32", "bitmask": uint8 tensor,
                                    "values": tensor}},
    }

``tensors`` keeps the state dict's order. A pruned tensor is stored as a bitmask of its kept positions (one bit per
element in row-major order, eight to a byte, least significant bit first) and the kept values in the same order.
Everything else (BatchNorm statistics, biases, layers that keep every weight, ``num_batches_tracked``) is stored
as the dense tensor itself.

Why a bitmask rather than CSR or coordinates: the bitmask costs 1 bit per element whatever the density, an index
costs at least 16 bits per kept value, so the bitmask is smaller at every density above 1/16 (sparsity below
93.75%). Past that the values (32 bits each in float32) still dominate the file, so one format is kept for
simplicity. At 90% global sparsity a CIFAR ResNet18 file is about 13% of the dense file: 10% of the values plus
1/32 for the bitmask.

Pruned positions come back as ``+0.0``; a ``-0.0`` left by masking a negative weight compares equal
(``torch.equal``) but is not bit-identical.

Sizes are in megabytes of 10^6 bytes (:func:`size_mb`). The "dense size" is the size of the ``torch.save`` file of
the plain ``{name: tensor}`` state dict (:func:`dense_size_bytes`), which is exactly what ``--to-dense`` writes.

Command line::

    python -m analysis.export CKPT [--out model.sparse.pt] [--onnx model.onnx] [--to-dense dense.pt]
    python -m analysis.export CKPT --slim model.slim.pt [--onnx model.onnx]
    python -m analysis.export model.sparse.pt --to-dense dense.pt

``--slim`` removes pruned channels physically (:mod:`analysis.slim`): the file holds the smaller network's state
dict, which :class:`lit_modules.resnet.SlimResNet18` builds from its shapes, and ``--onnx`` then exports that
smaller network.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pruning_callbacks.engine.io import atomic_write_bytes
from pruning_callbacks.engine.masks import Masks

FORMAT = "lightning-pruning/sparse-state-dict"
FORMAT_VERSION = 1
BYTES_PER_MB = 1_000_000
"""A megabyte here is 10^6 bytes (as ``ls --si`` and file managers count), not a MiB."""

_BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def size_mb(num_bytes: int) -> float:
    """Convert a byte count to megabytes of 10^6 bytes."""
    return num_bytes / BYTES_PER_MB


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_sparse` wrote.

    Attributes:
        path: The sparse file.
        dense_bytes: Size of the dense ``torch.save`` file of the same state dict (:func:`dense_size_bytes`).
        sparse_bytes: Size of the sparse file.
        sparsity: Fraction of pruned entries among the weight tensors (the masked tensors, plus every 2-D and 4-D
            floating ``*weight`` tensor, i.e. the Conv and Linear weights).
        pruned_weights: Number of pruned entries.
        total_weights: Number of entries of the weight tensors.
        sparse_tensors: Number of tensors stored as bitmask and values.
    """

    path: Path
    dense_bytes: int
    sparse_bytes: int
    sparsity: float
    pruned_weights: int
    total_weights: int
    sparse_tensors: int

    @property
    def ratio(self) -> float:
        """Sparse file size over dense file size."""
        return self.sparse_bytes / self.dense_bytes

    @property
    def dense_mb(self) -> float:
        """Dense size in megabytes of 10^6 bytes."""
        return size_mb(self.dense_bytes)

    @property
    def sparse_mb(self) -> float:
        """Sparse size in megabytes of 10^6 bytes."""
        return size_mb(self.sparse_bytes)


# ---------------------------------------------------------------------- bit packing


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a boolean tensor into bytes: element ``i`` (row-major) is bit ``i % 8`` of byte ``i // 8``.

    Args:
        mask: Boolean tensor of any shape.

    Returns:
        1-D ``uint8`` tensor of ``ceil(mask.numel() / 8)`` bytes; padding bits are 0.
    """
    flat = mask.detach().reshape(-1).to(torch.uint8)
    padding = -flat.numel() % 8
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    return (flat.reshape(-1, 8) * _BIT_VALUES.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` bits as a flat boolean tensor.

    Args:
        packed: 1-D ``uint8`` tensor from :func:`pack_bits`.
        numel: Number of elements packed.

    Raises:
        ValueError: If ``packed`` is not a 1-D ``uint8`` tensor of ``ceil(numel / 8)`` bytes.
    """
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != math.ceil(numel / 8):
        raise ValueError(
            f"a bitmask of {numel} elements must be a 1-D uint8 tensor of {math.ceil(numel / 8)} bytes, got "
            f"{packed.dtype} of shape {tuple(packed.shape)}"
        )
    bits = (packed.unsqueeze(1) & _BIT_VALUES.to(packed.device)) != 0
    return bits.reshape(-1)[:numel]


# ---------------------------------------------------------------------- sizes


def plain_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of ``state_dict``, detached and on the CPU (a non-tensor entry is refused)."""
    plain: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"state_dict entry '{name}' must be a tensor, got {type(value).__name__}")
        plain[name] = value.detach().cpu()
    return plain


def _serialized(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def dense_size_bytes(state_dict: Mapping[str, Tensor]) -> int:
    """Size in bytes of the ``torch.save`` file of ``state_dict`` as a plain ``{name: CPU tensor}`` dict.

    Measured by serializing to memory, so it is the real file size, ``torch.save``'s archive overhead included, of
    the file that :func:`~pruning_callbacks.engine.io.atomic_torch_save` (and ``--to-dense``) writes. ``torch.save``
    called with a file name instead names the archive's records after the file, which moves the size by a few bytes per
    tensor; the sparse size is measured the same way, so the two compare like for like.

    Args:
        state_dict: Parameter and buffer name to tensor.

    Raises:
        TypeError: If a value is not a tensor.
    """
    return len(_serialized(plain_state_dict(state_dict)))


# ---------------------------------------------------------------------- export and load


def _is_weight_tensor(name: str, tensor: Tensor) -> bool:
    """Conv (4-D) and Linear (2-D) floating weights: what ``masks=None`` looks for exact zeros in."""
    return tensor.is_floating_point() and tensor.dim() in (2, 4) and name.rsplit(".", 1)[-1] == "weight"


def _keep_masks(state_dict: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """Keep-mask of every weight tensor (derived from zeros where ``masks`` gives none), checked against the data."""
    if masks is None:
        return {name: tensor != 0 for name, tensor in state_dict.items() if _is_weight_tensor(name, tensor)}
    checked = Masks(masks) if not isinstance(masks, Masks) else masks
    keep: dict[str, Tensor] = {}
    for name, mask in checked.items():
        if name not in state_dict:
            raise ValueError(f"mask '{name}' names no tensor of the state_dict")
        tensor = state_dict[name]
        if mask.shape != tensor.shape:
            raise ValueError(f"mask '{name}' has shape {tuple(mask.shape)} but the tensor has {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise ValueError(f"mask '{name}' is for a {tensor.dtype} tensor; only floating tensors can be masked")
        mask = mask.cpu()
        nonzero = int(torch.count_nonzero(tensor[~mask]))
        if nonzero:
            raise ValueError(
                f"'{name}' has {nonzero} nonzero values at positions its mask prunes; apply the masks before exporting"
            )
        keep[name] = mask
    for name, tensor in state_dict.items():
        if name not in keep and _is_weight_tensor(name, tensor):
            keep[name] = torch.ones_like(tensor, dtype=torch.bool)
    return keep


def sparse_payload(
    state_dict: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None, source: str = ""
) -> dict[str, Any]:
    """Build the object that :func:`export_sparse` saves (see the module docstring for the format).

    Args:
        state_dict: A plain model state dict (name to tensor).
        masks: Full parameter name to keep-mask (bool or 0/1), e.g. ``Masks`` or its ``state_dict()``; ``None``
            derives the masks from the exact zeros of the Conv and Linear weights (2-D and 4-D floating
            ``*weight`` tensors).
        source: Free text recorded in the metadata, e.g. the checkpoint path.

    Raises:
        TypeError: If a state dict value is not a tensor.
        ValueError: If a mask names no tensor, has another shape, is for a non-floating tensor, or prunes a
            position whose value is not zero.
    """
    plain = plain_state_dict(state_dict)
    keep = _keep_masks(plain, masks)
    tensors: dict[str, Any] = {}
    pruned = 0
    for name, tensor in plain.items():
        mask = keep.get(name)
        kept = int(mask.sum()) if mask is not None else tensor.numel()
        if mask is None or kept == tensor.numel():
            tensors[name] = tensor
            continue
        pruned += tensor.numel() - kept
        flat_mask = mask.reshape(-1)
        tensors[name] = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "bitmask": pack_bits(flat_mask),
            "values": tensor.reshape(-1)[flat_mask],  # boolean indexing copies: no shared storage
        }
    total = sum(mask.numel() for mask in keep.values())
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "metadata": {
            "source": source,
            "sparsity": pruned / total if total else 0.0,
            "pruned_weights": pruned,
            "total_weights": total,
            "sparse_tensors": sum(isinstance(entry, dict) for entry in tensors.values()),
            "bit_order": "little",
            "torch_version": str(torch.__version__),
        },
        "tensors": tensors,
    }


def export_sparse(
    state_dict: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    masks: Mapping[str, Tensor] | None = None,
    *,
    source: str = "",
) -> ExportResult:
    """Write ``state_dict`` as a sparse file (atomically) and measure it against the dense file.

    Args:
        state_dict: A plain model state dict, pruned weights already zero.
        path: Destination file (``.sparse.pt`` by convention); its folder is created if needed.
        masks: Keep-masks by full parameter name; ``None`` derives them from the exact zeros of the Conv and
            Linear weights. A masked tensor whose mask keeps everything is stored dense.
        source: Free text recorded in the metadata, e.g. the checkpoint path.

    Returns:
        Sizes of both files and the sparsity stored.

    Raises:
        TypeError: If a state dict value is not a tensor.
        ValueError: If a mask does not fit its tensor or prunes a nonzero value.
    """
    payload = sparse_payload(state_dict, masks, source)
    data = _serialized(payload)
    atomic_write_bytes(path, data)
    metadata = payload["metadata"]
    return ExportResult(
        path=Path(path),
        dense_bytes=dense_size_bytes(state_dict),
        sparse_bytes=len(data),
        sparsity=float(metadata["sparsity"]),
        pruned_weights=int(metadata["pruned_weights"]),
        total_weights=int(metadata["total_weights"]),
        sparse_tensors=int(metadata["sparse_tensors"]),
    )


def is_sparse_payload(obj: object) -> bool:
    """Whether ``obj`` (something ``torch.load`` returned) is a sparse file of this format."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _densify(name: str, entry: Mapping[str, Any]) -> Tensor:
    shape = [int(size) for size in entry["shape"]]
    values: Tensor = entry["values"]
    if str(values.dtype).removeprefix("torch.") != entry["dtype"]:
        raise ValueError(f"'{name}': values are {values.dtype} but the file says {entry['dtype']}")
    numel = math.prod(shape)
    keep = unpack_bits(entry["bitmask"], numel)
    kept = int(keep.sum())
    if kept != values.numel():
        raise ValueError(f"'{name}': the bitmask keeps {kept} positions but {values.numel()} values are stored")
    dense = torch.zeros(numel, dtype=values.dtype)
    dense[keep] = values
    return dense.reshape(shape)


def dense_state_dict(payload: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rebuild the plain dense state dict from a loaded sparse file.

    Raises:
        ValueError: If ``payload`` is not this format, has a newer version, or is inconsistent.
    """
    if not is_sparse_payload(payload):
        raise ValueError(f"not a sparse export (expected format '{FORMAT}')")
    version = int(payload.get("version", 0))
    if version > FORMAT_VERSION:
        raise ValueError(f"sparse export version {version} is newer than this reader (version {FORMAT_VERSION})")
    return {
        name: entry if isinstance(entry, Tensor) else _densify(name, entry)
        for name, entry in payload["tensors"].items()
    }


def load_file(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with a one-line error naming ``what`` the file was for.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it cannot be read as a file of tensors and containers.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # Keep the one useful line of PyTorch's long message: which global is not allowed, if that is the cause.
        lines = [line.strip() for line in str(error).splitlines()]
        reason = next((line for line in lines if "Unsupported global" in line), "not a file of tensors and containers")
        raise ValueError(f"{path} cannot be read with torch.load(weights_only=True): {reason}") from None
    except (RuntimeError, EOFError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} cannot be read with torch.load(weights_only=True): {reason}") from None


def load_sparse(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a sparse file back into a plain dense state dict (same keys, order, dtypes and values).

    Args:
        path: A file written by :func:`export_sparse`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a sparse export or is inconsistent.
    """
    payload = load_file(path, "sparse export")
    if not is_sparse_payload(payload):
        raise ValueError(f"{path} is not a sparse export (expected format '{FORMAT}')")
    return dense_state_dict(payload)


def state_dict_from_checkpoint(
    ckpt_path: str | os.PathLike[str],
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Read the model state dict of a Lightning checkpoint and the masks of its pruning callback, if any.

    The checkpoint is read with ``weights_only=True``: plain containers and tensors only, no code runs.

    Args:
        ckpt_path: A ``.ckpt`` written by the Lightning ``Trainer``.

    Returns:
        The model's state dict, and the masks (name to bool tensor) of the callback state in
        ``checkpoint["callbacks"]`` that holds ``"masks"`` (a :class:`~pruning_callbacks.MaskedTraining`
        method), or ``None`` when there is none or it is still dense.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a Lightning checkpoint, or several callbacks hold masks.
    """
    return checkpoint_parts(load_file(ckpt_path, "checkpoint"), ckpt_path)


def checkpoint_parts(
    checkpoint: object, ckpt_path: str | os.PathLike[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """The weights of a loaded Lightning checkpoint and the masks its pruning callback saved (or ``None``).

    Raises:
        ValueError: If it is not a checkpoint, or several callbacks saved masks.
    """
    if not is_checkpoint(checkpoint):
        raise ValueError(f"{ckpt_path} is not a Lightning checkpoint (no 'state_dict' entry)")
    assert isinstance(checkpoint, Mapping)
    state_dict = dict(checkpoint["state_dict"])
    callbacks = checkpoint.get("callbacks") or {}
    with_masks = {
        key: state["masks"]
        for key, state in callbacks.items()
        if isinstance(state, Mapping) and state.get("masks") is not None
    }
    if len(with_masks) > 1:
        raise ValueError(f"{ckpt_path} has masks from several callbacks ({', '.join(with_masks)}); expected one")
    if not with_masks:
        return state_dict, None
    masks = Masks.from_state_dict(next(iter(with_masks.values())))
    return state_dict, masks.state_dict()


def is_checkpoint(obj: object) -> bool:
    """Whether ``obj`` looks like a Lightning checkpoint (a mapping with a ``state_dict``)."""
    return isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)


def __getattr__(name: str) -> Any:
    """``export_onnx`` and ``main`` moved to :mod:`analysis.onnx_export` and :mod:`analysis.export_command`."""
    if name == "export_onnx":
        from analysis.onnx_export import export_onnx

        return export_onnx
    if name == "main":
        from analysis.export_command import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from analysis.export_command import main

    sys.exit(main())
