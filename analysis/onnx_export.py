"""Export a dense, masked or slimmed ResNet18 to ONNX (needs ``pip install onnx onnxscript``)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from analysis.export import plain_state_dict
from lit_modules.resnet import resnet18_from_state_dict


def _resnet18_state_dict(model_or_state_dict: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        return {name: tensor.detach().cpu() for name, tensor in model_or_state_dict.state_dict().items()}
    return plain_state_dict(model_or_state_dict)


def export_onnx(
    model_or_state_dict: nn.Module | Mapping[str, Tensor],
    path: str | os.PathLike[str],
    width: int | None = None,
    num_classes: int | None = None,
    opset_version: int | None = None,
) -> Path:
    """Export a CIFAR ResNet18 (dense with zeros, or channel-slimmed) to ONNX (one file, dynamic batch axis).

    A fresh :class:`lit_modules.resnet.ResNet18`, or :class:`lit_modules.resnet.SlimResNet18` when the weights'
    shapes are a slimmed network's (CPU, float32, eval mode), is built and loaded strictly with the weights, so the
    model passed in is not touched. The graph comes from the ``torch.export``-based exporter (``dynamo=True``, the
    default since PyTorch 2.9; the TorchScript one is deprecated), traced on a ``(1, 3, 32, 32)`` input
    with input ``images`` and output ``logits`` whose first axis is ``batch``. The file is written
    next to ``path`` under a temporary name, then renamed into place.

    Args:
        model_or_state_dict: A ResNet18 (``ResNet18``, ``SlimResNet18``, ``ResNet18Classifier``) or its state dict.
        path: Destination ``.onnx`` file; its folder is created if needed.
        width: First-stage channels; ``None`` reads it from ``conv1.weight``.
        num_classes: Classifier outputs; ``None`` reads them from ``linear.weight``.
        opset_version: ONNX opset; ``None`` means the exporter's default.

    Returns:
        The path written.

    Raises:
        ImportError: If ``onnx`` or ``onnxscript`` is not installed.
        ValueError: If the weights are not a CIFAR ResNet18's or do not match ``width`` / ``num_classes``.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install onnx onnxscript")
    state_dict = _resnet18_state_dict(model_or_state_dict)
    if "conv1.weight" not in state_dict or "linear.weight" not in state_dict:
        raise ValueError("export_onnx needs a CIFAR ResNet18 state dict (with conv1.weight and linear.weight)")
    found_width, found_classes = state_dict["conv1.weight"].shape[0], state_dict["linear.weight"].shape[0]
    if width is not None and width != found_width:
        raise ValueError(f"width={width} does not match the weights, whose conv1 has {found_width} channels")
    if num_classes is not None and num_classes != found_classes:
        raise ValueError(f"num_classes={num_classes} does not match the weights, whose linear has {found_classes}")
    network = resnet18_from_state_dict(
        {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state_dict.items()}
    )
    network.eval()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(handle)
    try:
        torch.onnx.export(
            network,
            (torch.zeros(1, 3, 32, 32),),
            temporary,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=opset_version,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path
