"""``python cli.py export`` (and ``python -m analysis.export``): the command line of :mod:`analysis.export`.

See :mod:`analysis.export` for the file formats and the commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from analysis import slim
from analysis.export import (
    checkpoint_parts,
    dense_size_bytes,
    dense_state_dict,
    export_sparse,
    is_checkpoint,
    is_sparse_payload,
    load_file,
    plain_state_dict,
    size_mb,
)
from analysis.onnx_export import export_onnx
from lit_modules.resnet import ResNet18Channels
from pruning_callbacks.engine.io import atomic_torch_save


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.export",
        description="Export a pruned checkpoint as a compact sparse file (and ONNX), or turn a sparse file back "
        "into a dense state dict. Sizes are in MB of 10^6 bytes.",
    )
    parser.add_argument("input", help="a Lightning checkpoint (.ckpt) or a sparse export (.sparse.pt)")
    parser.add_argument(
        "--out", help="sparse file to write from a checkpoint (default: INPUT with the suffix .sparse.pt)"
    )
    parser.add_argument(
        "--slim",
        help="write the network with its pruned channels removed (a smaller, faster ResNet18) to this file; the "
        "checkpoint needs channel masks (configs/l1_filter.yaml, configs/early_bird.yaml); no sparse file is "
        "written unless --out is given",
    )
    parser.add_argument(
        "--onnx",
        help="also write an ONNX model, of the slimmed network with --slim (needs: pip install onnx onnxscript)",
    )
    parser.add_argument("--to-dense", dest="to_dense", help="also write the plain dense state dict (torch.save)")
    return parser


def _run(args: argparse.Namespace) -> None:
    source = Path(args.input)
    loaded = load_file(source, "input file")
    if slim.is_slim_payload(loaded):
        if args.out or args.slim:
            raise ValueError("INPUT is already a slimmed network; only --onnx and --to-dense apply to it")
        state_dict = dict(loaded["state_dict"])
        print(
            f"slimmed network {source} ({ResNet18Channels.from_state_dict(state_dict).parameter_count():,} parameters)"
        )
    elif is_sparse_payload(loaded):
        if args.out:
            raise ValueError("--out applies to a checkpoint input; INPUT is already a sparse export")
        state_dict = dense_state_dict(loaded)
        _print_sizes(
            f"sparse export {source} (sparsity {float(loaded['metadata'].get('sparsity', 0.0)):.4f})",
            dense_size_bytes(state_dict),
            source.stat().st_size,
        )
    elif is_checkpoint(loaded):
        state_dict, masks = checkpoint_parts(loaded, source)
        del loaded
        if args.out or not args.slim:
            out = Path(args.out) if args.out else source.with_suffix(".sparse.pt")
            result = export_sparse(state_dict, out, masks, source=str(source))
            origin = "the pruning callback's masks" if masks is not None else "the zeros of the Conv/Linear weights"
            _print_sizes(
                f"wrote {out} (sparsity {result.sparsity:.4f}, from {origin})", result.dense_bytes, result.sparse_bytes
            )
    else:
        raise ValueError(f"{source} is neither a Lightning checkpoint, a sparse export nor a slimmed network")
    if args.slim:
        state_dict = _write_slim(state_dict, Path(args.slim), source)
    if args.to_dense:
        atomic_torch_save(state_dict, args.to_dense)
        print(f"wrote {args.to_dense} (dense state dict)")
    if args.onnx:
        print(f"wrote {export_onnx(state_dict, args.onnx)} (ONNX)")


def _print_sizes(headline: str, dense_bytes: int, sparse_bytes: int) -> None:
    print(headline)
    print(f"dense:  {size_mb(dense_bytes):.3f} MB ({dense_bytes} bytes)")
    print(f"sparse: {size_mb(sparse_bytes):.3f} MB ({sparse_bytes} bytes)")
    print(f"ratio:  {sparse_bytes / dense_bytes:.4f} ({dense_bytes / sparse_bytes:.2f}x smaller)")


def _write_slim(state_dict: Mapping[str, Tensor], out: Path, source: Path) -> dict[str, Tensor]:
    """Slim ``state_dict``, check the logits against the masked network's, write it, and return the slim weights."""
    result = slim.slim_state_dict(plain_state_dict(state_dict))
    if result.after == result.before:
        raise ValueError(
            f"{source} has no channel to remove (no BatchNorm channel with weight and bias both 0); --slim needs "
            "channel masks, e.g. from configs/l1_filter.yaml or configs/early_bird.yaml"
        )
    difference, scale = slim.logit_difference(state_dict, result.state_dict)
    if difference > 1e-4 * max(1.0, scale):
        raise ValueError(
            f"the slimmed network's logits differ from the masked network's by {difference:.3g} (largest logit "
            f"{scale:.3g}); the checkpoint's pruned channels are not exactly zero"
        )
    slim.write_slim(result, out, {"source": str(source), "max_logit_difference": difference})
    before, after = result.before, result.after
    print(
        f"wrote {out} (slimmed ResNet18: {result.parameters_after:,} of {result.parameters_before:,} parameters, "
        f"{result.parameters_after / result.parameters_before:.3f})"
    )
    print(f"residual streams: {list(before.streams)} -> {list(after.streams)}")
    print(f"inside blocks:    {[list(s) for s in before.inner]} -> {[list(s) for s in after.inner]}")
    print(
        f"logits on {slim.CHECK_IMAGES} random images match the masked network's (largest difference {difference:.2g})"
    )
    return result.state_dict


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments instead of ``sys.argv[1:]``.

    Returns:
        0 on success, 1 after printing a one-line error.
    """
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
