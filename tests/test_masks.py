"""Unit tests for the Masks type on hand-made masks."""

from __future__ import annotations

import pytest
import torch

from pruning_callbacks.engine.masks import Masks


def _example() -> Masks:
    # "a" keeps 3 of 4, "b" keeps 1 of 3: 4 of 7 kept, sparsity 3/7.
    return Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([False, False, True])})


def test_numeric_masks_are_stored_as_bool_and_order_is_kept() -> None:
    masks = Masks({"z": torch.tensor([1.0, 0.0]), "a": torch.tensor([0, 1], dtype=torch.uint8)})
    assert list(masks) == ["z", "a"]
    assert masks["z"].dtype == torch.bool
    assert masks["z"].tolist() == [True, False]
    assert masks["a"].tolist() == [False, True]
    assert len(masks) == 2


def test_rejects_values_other_than_zero_and_one() -> None:
    with pytest.raises(ValueError, match=r"mask 'w' must hold only 0 and 1"):
        Masks({"w": torch.tensor([0.0, 0.5])})
    with pytest.raises(ValueError, match="mask 'w' must hold only 0 and 1"):
        Masks({"w": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="mask 'w' must hold only 0 and 1"):
        Masks({"w": torch.tensor([float("nan")])})


def test_rejects_empty_and_non_tensors() -> None:
    with pytest.raises(ValueError, match="at least one parameter"):
        Masks({})
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        Masks({"w": [1, 0]})  # type: ignore[dict-item]


def test_input_tensors_are_copied() -> None:
    source = torch.tensor([True, True])
    masks = Masks({"w": source})
    source[0] = False
    assert masks["w"].tolist() == [True, True]


def test_counts_and_sparsity() -> None:
    masks = _example()
    assert masks.total == 7
    assert masks.remaining() == 4
    assert masks.remaining_per_layer() == {"a": 3, "b": 1}
    assert masks.numel_per_layer() == {"a": 4, "b": 3}
    assert masks.sparsity() == pytest.approx(3 / 7)
    assert masks.layer_sparsity() == pytest.approx({"a": 0.25, "b": 2 / 3})
    assert repr(masks) == "Masks(sparsity=0.4286, layers=2)"


def test_dense() -> None:
    params = {"conv.weight": torch.randn(2, 3, 1, 1), "fc.weight": torch.randn(4, 2)}
    masks = Masks.dense(params)
    assert list(masks) == ["conv.weight", "fc.weight"]
    assert masks["conv.weight"].shape == (2, 3, 1, 1)
    assert masks.remaining() == masks.total == 14
    assert masks.sparsity() == 0.0
    with pytest.raises(ValueError, match="at least one parameter"):
        Masks.dense({})


def test_state_dict_round_trip_gives_cpu_bool_clones() -> None:
    masks = _example()
    state = masks.state_dict()
    assert all(t.dtype == torch.bool and t.device.type == "cpu" for t in state.values())
    state["a"][0, 0] = False  # must not reach the masks
    assert masks["a"][0, 0].item() is True
    restored = Masks.from_state_dict(masks.state_dict())
    assert restored == masks
    assert restored.remaining_per_layer() == {"a": 3, "b": 1}


def test_to_keeps_values_and_counts() -> None:
    masks = _example()
    masks.remaining()
    moved = masks.to("cpu")
    assert moved == masks
    assert moved.remaining() == 4


def test_equality() -> None:
    assert _example() == _example()
    other = Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([True, False, True])})
    assert _example() != other
    assert _example() != Masks({"a": torch.tensor([[1, 0], [1, 1]])})


def test_intersection() -> None:
    other = Masks({"a": torch.tensor([[0, 0], [1, 1]]), "b": torch.tensor([True, True, True])})
    both = _example() & other
    assert both["a"].tolist() == [[False, False], [True, True]]
    assert both["b"].tolist() == [False, False, True]
    assert both.remaining() == 3
    with pytest.raises(ValueError, match=r"same parameters; only in the first: \[b\], only in the second: \[\]"):
        _ = _example() & Masks({"a": torch.ones(2, 2)})
    with pytest.raises(ValueError, match=r"equal shapes; 'b' is \(3,\) in the first and \(4,\) in the second"):
        _ = _example() & Masks({"a": torch.ones(2, 2), "b": torch.ones(4)})


def test_is_subset_of() -> None:
    masks = _example()
    smaller = Masks({"a": torch.tensor([[1, 0], [0, 0]]), "b": torch.tensor([False, False, True])})
    assert smaller.is_subset_of(masks)
    assert masks.is_subset_of(masks)
    assert not masks.is_subset_of(smaller)
    grows_back = Masks({"a": torch.tensor([[0, 1], [0, 0]]), "b": torch.tensor([False, False, False])})
    assert not grows_back.is_subset_of(masks)


def test_hamming_distance() -> None:
    masks = _example()
    other = Masks({"a": torch.tensor([[0, 0], [1, 1]]), "b": torch.tensor([True, False, False])})
    # Differ at a[0,0], b[0], b[2]: 3 of 7 positions.
    assert masks.hamming_distance(other) == pytest.approx(3 / 7)
    assert masks.hamming_distance(masks) == 0.0


def test_check_compatible_accepts_matching_shapes() -> None:
    _example().check_compatible({"a": torch.Size([2, 2]), "b": torch.Size([3])})


def test_check_compatible_names_missing_and_unexpected() -> None:
    masks = _example()
    with pytest.raises(ValueError) as error:
        masks.check_compatible({"a": torch.Size([2, 2]), "c": torch.Size([3])})
    message = str(error.value)
    assert message == "masks do not fit the parameters: no mask for parameters [c]; masks for unknown parameters [b]."
    assert "\n" not in message
    with pytest.raises(ValueError, match=r"^masks do not fit the parameters: no mask for parameters \[c\]\.$"):
        masks.check_compatible({"a": torch.Size([2, 2]), "b": torch.Size([3]), "c": torch.Size([1])})


def test_check_compatible_names_first_shape_mismatch() -> None:
    with pytest.raises(ValueError) as error:
        _example().check_compatible({"a": torch.Size([4]), "b": torch.Size([2])})
    assert str(error.value) == "mask 'a' has shape (2, 2) but the parameter has shape (4,)."
