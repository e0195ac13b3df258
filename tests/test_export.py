"""Sparse export (analysis.export): file size at 90% sparsity, exact round trips, checkpoints, CLI, ONNX."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from analysis.export import (
    FORMAT,
    FORMAT_VERSION,
    dense_size_bytes,
    export_sparse,
    load_sparse,
    pack_bits,
    size_mb,
    state_dict_from_checkpoint,
    unpack_bits,
)
from analysis.export_command import main
from analysis.onnx_export import export_onnx
from lit_modules.classifier import ResNet18Classifier
from lit_modules.resnet import ResNet18
from pruning_callbacks.engine.io import atomic_torch_save
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.selection import prune_to_sparsity


def pruned_resnet(width: int, sparsity: float, seed: int = 0) -> tuple[ResNet18, Masks]:
    """A ResNet18 pruned to exactly ``sparsity`` by global magnitude, pruned weights zeroed (as masking leaves them)."""
    torch.manual_seed(seed)
    model = ResNet18(width=width)
    params = prunable_parameters(model)
    masks = prune_to_sparsity({name: p.detach().abs() for name, p in params.items()}, Masks.dense(params), sparsity)
    with torch.no_grad():
        torch._foreach_mul_(list(params.values()), [masks[name].float() for name in params])
    return model, masks


@pytest.fixture(scope="module")
def pruned_full_width() -> tuple[dict[str, torch.Tensor], Masks]:
    model, masks = pruned_resnet(width=64, sparsity=0.9)
    return model.state_dict(), masks


def assert_identical(loaded: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(original)
    for name, tensor in original.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name


# ---------------------------------------------------------------------- bit packing


def test_pack_bits_hand_case() -> None:
    mask = torch.tensor([1, 0, 1, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [1 + 4 + 128, 1]
    assert torch.equal(unpack_bits(packed, 9), mask)


def test_pack_bits_round_trip_any_length() -> None:
    generator = torch.Generator().manual_seed(0)
    for numel in (1, 7, 8, 9, 64, 1001):
        mask = torch.rand(numel, generator=generator) < 0.3
        assert pack_bits(mask).numel() == -(-numel // 8)
        assert torch.equal(unpack_bits(pack_bits(mask), numel), mask)
    with pytest.raises(ValueError, match="uint8 tensor of 2 bytes"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 9)


# ---------------------------------------------------------------------- full-width ResNet18 at 90%


def test_full_width_at_90_percent_is_small_and_exact(pruned_full_width, tmp_path: Path) -> None:
    state_dict, masks = pruned_full_width
    assert masks.sparsity() == pytest.approx(0.9, abs=1e-7)
    result = export_sparse(state_dict, tmp_path / "model.sparse.pt", masks)

    dense_file = tmp_path / "dense.pt"
    torch.save(state_dict, dense_file)
    assert result.sparse_bytes == (tmp_path / "model.sparse.pt").stat().st_size
    assert result.dense_bytes == dense_size_bytes(state_dict)
    # The same tensors; only torch.save's record names (they embed the file name) and padding differ.
    assert abs(result.dense_bytes - dense_file.stat().st_size) < 128 * len(state_dict)
    assert result.ratio <= 0.25
    # 10% of the values plus 1 bit per weight (1/32 of float32): about 13.4% of the dense file.
    assert 0.125 < result.ratio < 0.14
    assert result.sparse_tensors == 21
    assert result.sparsity == pytest.approx(masks.sparsity())
    assert result.total_weights == masks.total
    assert result.dense_mb == pytest.approx(result.dense_bytes / 1e6)

    payload = torch.load(tmp_path / "model.sparse.pt", weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == FORMAT_VERSION
    assert payload["metadata"]["sparsity"] == pytest.approx(0.9, abs=1e-7)
    conv = payload["tensors"]["layer1.0.conv1.weight"]
    assert conv["shape"] == [64, 64, 3, 3] and conv["dtype"] == "float32" and conv["bitmask"].dtype == torch.uint8
    assert isinstance(payload["tensors"]["bn1.running_mean"], torch.Tensor)

    loaded = load_sparse(tmp_path / "model.sparse.pt")
    assert_identical(loaded, state_dict)
    ResNet18().load_state_dict(loaded, strict=True)
    ResNet18Classifier().load_state_dict(loaded, strict=True)


def test_masks_derived_from_zeros_equal_the_explicit_masks(pruned_full_width, tmp_path: Path) -> None:
    state_dict, masks = pruned_full_width
    explicit = export_sparse(state_dict, tmp_path / "explicit.sparse.pt", masks)
    derived = export_sparse(state_dict, tmp_path / "derived.sparse.pt")
    assert derived.sparsity == explicit.sparsity and derived.sparse_bytes == explicit.sparse_bytes
    explicit_tensors = torch.load(tmp_path / "explicit.sparse.pt", weights_only=True)["tensors"]
    derived_tensors = torch.load(tmp_path / "derived.sparse.pt", weights_only=True)["tensors"]
    for name, mask in masks.items():
        assert torch.equal(unpack_bits(derived_tensors[name]["bitmask"], mask.numel()), mask.reshape(-1)), name
        assert torch.equal(derived_tensors[name]["values"], explicit_tensors[name]["values"]), name


# ---------------------------------------------------------------------- small cases


def test_dense_size_is_the_size_of_the_dense_file(tmp_path: Path) -> None:
    state_dict = ResNet18(width=4).state_dict()
    plain = {name: tensor for name, tensor in state_dict.items()}
    atomic_torch_save(plain, tmp_path / "dense.pt")  # serialized in memory, like the measurement
    assert dense_size_bytes(state_dict) == (tmp_path / "dense.pt").stat().st_size
    # torch.save straight to a file names its records after the file, so the size moves by a few bytes per tensor.
    torch.save(plain, tmp_path / "direct.pt")
    assert abs(dense_size_bytes(state_dict) - (tmp_path / "direct.pt").stat().st_size) < 128 * len(plain)
    assert size_mb(2_500_000) == 2.5


def test_dtypes_negative_zeros_and_fully_kept_layers_round_trip(tmp_path: Path) -> None:
    weight = torch.tensor([[1.5, -0.0, 0.0], [-2.0, 0.0, 3.0]], dtype=torch.bfloat16)
    state_dict = {
        "a.weight": weight,
        "b.weight": torch.arange(8, dtype=torch.float16).reshape(2, 4) + 1,  # no zeros: stays dense
        "b.bias": torch.zeros(2),  # zeros but 1-D: never sparse
        "bn.num_batches_tracked": torch.tensor(7),
    }
    result = export_sparse(state_dict, tmp_path / "small.sparse.pt")
    assert result.sparse_tensors == 1
    assert result.pruned_weights == 3 and result.total_weights == 14
    assert_identical(load_sparse(tmp_path / "small.sparse.pt"), state_dict)

    masks = {"a.weight": weight != 0, "b.weight": torch.ones(2, 4, dtype=torch.bool)}
    assert export_sparse(state_dict, tmp_path / "masked.sparse.pt", masks).sparse_tensors == 1
    assert_identical(load_sparse(tmp_path / "masked.sparse.pt"), state_dict)


def test_export_errors(tmp_path: Path) -> None:
    state_dict = {"fc.weight": torch.tensor([[1.0, 2.0], [0.0, 4.0]]), "fc.bias": torch.zeros(2)}
    out = tmp_path / "x.sparse.pt"
    with pytest.raises(ValueError, match=r"'fc\.weight' has 1 nonzero values at positions its mask prunes"):
        export_sparse(state_dict, out, {"fc.weight": torch.tensor([[True, False], [False, True]])})
    with pytest.raises(ValueError, match="names no tensor"):
        export_sparse(state_dict, out, {"other.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        export_sparse(state_dict, out, {"fc.weight": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="only 0 and 1"):
        export_sparse(state_dict, out, {"fc.weight": torch.full((2, 2), 2.0)})
    with pytest.raises(TypeError, match="must be a tensor"):
        export_sparse({"fc.weight": [1.0]}, out)  # type: ignore[dict-item]
    assert not out.exists()

    with pytest.raises(FileNotFoundError, match="sparse export not found"):
        load_sparse(tmp_path / "missing.sparse.pt")
    torch.save(state_dict, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a sparse export"):
        load_sparse(tmp_path / "plain.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_sparse(tmp_path / "garbage.pt")


# ---------------------------------------------------------------------- checkpoints and the command line


def write_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], callbacks: dict[str, dict]) -> Path:
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state_dict, "callbacks": callbacks}, path)
    return path


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], Masks]:
    model, masks = pruned_resnet(width=4, sparsity=0.8)
    callbacks = {
        "LotteryTicket{'target_sparsity': 0.8}": {"version": 1, "masks": masks.state_dict(), "mask_updates": 1},
        "ModelCheckpoint{'monitor': None}": {"best_model_path": ""},
    }
    return write_checkpoint(tmp_path / "last.ckpt", model.state_dict(), callbacks), model.state_dict(), masks


def test_checkpoint_round_trip(tiny_checkpoint, tmp_path: Path) -> None:
    path, state_dict, masks = tiny_checkpoint
    loaded_state, loaded_masks = state_dict_from_checkpoint(path)
    assert_identical(loaded_state, state_dict)
    assert loaded_masks is not None and Masks(loaded_masks) == masks

    result = export_sparse(loaded_state, tmp_path / "ckpt.sparse.pt", loaded_masks)
    assert result.sparsity == pytest.approx(0.8, abs=1e-4)
    assert_identical(load_sparse(tmp_path / "ckpt.sparse.pt"), state_dict)


def test_checkpoint_without_masks_and_bad_checkpoints(tmp_path: Path) -> None:
    state_dict = ResNet18(width=4).state_dict()
    dense = write_checkpoint(tmp_path / "dense.ckpt", state_dict, {"SomeCallback": {"masks": None}})
    assert state_dict_from_checkpoint(dense)[1] is None

    masks = Masks.dense(prunable_parameters(ResNet18(width=4))).state_dict()
    twice = write_checkpoint(tmp_path / "twice.ckpt", state_dict, {"A": {"masks": masks}, "B": {"masks": masks}})
    with pytest.raises(ValueError, match="several callbacks"):
        state_dict_from_checkpoint(twice)
    torch.save(state_dict, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        state_dict_from_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        state_dict_from_checkpoint(tmp_path / "missing.ckpt")


def test_cli_exports_prints_sizes_and_converts_back(tiny_checkpoint, tmp_path: Path, capsys) -> None:
    path, state_dict, _ = tiny_checkpoint
    out, dense = tmp_path / "model.sparse.pt", tmp_path / "dense.pt"
    assert main([str(path), "--out", str(out), "--to-dense", str(dense)]) == 0
    printed = capsys.readouterr().out
    assert "pruning callback's masks" in printed
    for label in ("dense:", "sparse:", "ratio:", "MB"):
        assert label in printed
    assert f"({out.stat().st_size} bytes)" in printed
    assert f"({dense_size_bytes(state_dict)} bytes)" in printed
    assert_identical(torch.load(dense, weights_only=True), state_dict)
    assert dense.stat().st_size == dense_size_bytes(state_dict)

    dense_again = tmp_path / "dense_again.pt"
    assert main([str(out), "--to-dense", str(dense_again)]) == 0
    assert "sparsity 0.8" in capsys.readouterr().out
    assert_identical(torch.load(dense_again, weights_only=True), state_dict)

    default_out = path.with_suffix(".sparse.pt")
    assert main([str(path)]) == 0 and default_out.exists()


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing.ckpt")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: input file not found") and error.count("\n") == 1
    torch.save({"weight": torch.ones(2)}, tmp_path / "plain.pt")
    assert main([str(tmp_path / "plain.pt")]) == 1
    assert "neither a Lightning checkpoint, a sparse export nor a slimmed network" in capsys.readouterr().err


# ---------------------------------------------------------------------- ONNX


def test_onnx_export_of_a_tiny_model(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model, _ = pruned_resnet(width=4, sparsity=0.5)
    classifier = ResNet18Classifier(width=4)
    classifier.load_state_dict(model.state_dict())
    classifier.train()
    path = export_onnx(classifier, tmp_path / "onnx" / "model.onnx")
    assert classifier.training  # the module passed in is not touched
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # one file, no temporary left
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        images = torch.randn(3, 3, 32, 32)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model.eval()(images)
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="width=8 does not match"):
        export_onnx(model.state_dict(), tmp_path / "wrong.onnx", width=8)


def test_onnx_export_without_onnx_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args, **kwargs: None)
    with pytest.raises(ImportError, match="pip install onnx onnxscript"):
        export_onnx(ResNet18(width=4), tmp_path / "model.onnx")
