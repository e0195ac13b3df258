"""Unit tests for top-k selection on hand-made scores and masks."""

from __future__ import annotations

import pytest
import torch

from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.selection import (
    SCOPES,
    prune_fraction,
    prune_to_sparsity,
    select_global,
    select_layerwise,
    topk_mask,
)


def _bools(mask: torch.Tensor) -> list:
    return mask.tolist()


# topk_mask


def test_topk_mask_keeps_highest() -> None:
    assert _bools(topk_mask(torch.tensor([3.0, 1.0, 2.0, 5.0]), 2)) == [True, False, False, True]
    assert _bools(topk_mask(torch.tensor([3.0, 1.0, 2.0, 5.0]), 3)) == [True, False, True, True]


def test_topk_mask_all_equal_keeps_lowest_indices() -> None:
    assert _bools(topk_mask(torch.ones(5), 3)) == [True, True, True, False, False]


def test_topk_mask_partial_tie_at_threshold() -> None:
    # 9 is kept outright; two of the three 2s are needed, the lower indices win.
    scores = torch.tensor([1.0, 2.0, 9.0, 2.0, 0.0, 2.0])
    assert _bools(topk_mask(scores, 3)) == [False, True, True, True, False, False]


def test_topk_mask_edges() -> None:
    scores = torch.tensor([0.5, -float("inf"), float("inf")])
    assert _bools(topk_mask(scores, 0)) == [False, False, False]
    assert _bools(topk_mask(scores, 3)) == [True, True, True]
    assert _bools(topk_mask(scores, 1)) == [False, False, True]
    assert _bools(topk_mask(scores, 2)) == [True, False, True]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64])
def test_topk_mask_other_dtypes(dtype: torch.dtype) -> None:
    scores = torch.tensor([4, 1, 4, 2, 4], dtype=dtype)
    assert _bools(topk_mask(scores, 2)) == [True, False, True, False, False]


def test_topk_mask_errors() -> None:
    with pytest.raises(ValueError, match=r"1-D scores, got shape \(2, 2\)"):
        topk_mask(torch.ones(2, 2), 1)
    with pytest.raises(ValueError, match=r"k must be in \[0, 3\], got 4"):
        topk_mask(torch.ones(3), 4)
    with pytest.raises(ValueError, match=r"k must be in \[0, 3\], got -1"):
        topk_mask(torch.ones(3), -1)


# select_global


def _scores() -> dict[str, torch.Tensor]:
    return {"a": torch.tensor([[0.1, 0.9], [0.5, 0.3]]), "b": torch.tensor([0.8, 0.2, 0.7])}


def _dense() -> Masks:
    return Masks.dense(_scores())


def test_select_global_hand_values() -> None:
    masks = select_global(_scores(), _dense(), 3)
    assert _bools(masks["a"]) == [[False, True], [False, False]]
    assert _bools(masks["b"]) == [True, False, True]
    assert masks.remaining() == 3
    assert list(masks) == ["a", "b"]


def test_select_global_tie_across_layers_prefers_earlier_layer() -> None:
    scores = {"first": torch.ones(2), "second": torch.ones(2)}
    masks = select_global(scores, Masks.dense(scores), 3)
    assert _bools(masks["first"]) == [True, True]
    assert _bools(masks["second"]) == [True, False]


def test_select_global_never_revives_pruned_weights() -> None:
    # The two highest scores (0.9 and 0.8) are already pruned; the next two alive ones are chosen.
    current = Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([0, 1, 1])})
    masks = select_global(_scores(), current, 2)
    assert _bools(masks["a"]) == [[False, False], [True, False]]
    assert _bools(masks["b"]) == [False, False, True]
    assert masks.is_subset_of(current)


def test_select_global_keep_more_than_remain() -> None:
    current = Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([0, 1, 1])})
    with pytest.raises(ValueError, match=r"cannot keep 6 weights: only 5 of 7 remain"):
        select_global(_scores(), current, 6)
    with pytest.raises(ValueError, match="cannot keep -1 weights"):
        select_global(_scores(), current, -1)


def test_select_global_keep_all_remaining_is_identity() -> None:
    current = Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([0, 1, 1])})
    assert select_global(_scores(), current, 5) == current


def test_nan_scores_name_the_layer() -> None:
    scores = _scores()
    scores["b"] = torch.tensor([0.1, float("nan"), 0.2])
    with pytest.raises(ValueError, match=r"^scores for 'b' contain NaN\.$"):
        select_global(scores, _dense(), 3)
    with pytest.raises(ValueError, match=r"^scores for 'b' contain NaN\.$"):
        select_layerwise(scores, _dense(), {"a": 1, "b": 1})


def test_scores_must_match_masks() -> None:
    with pytest.raises(ValueError, match=r"missing: \['b'\], unexpected: \['c'\]"):
        select_global({"a": torch.zeros(2, 2), "c": torch.zeros(3)}, _dense(), 1)
    with pytest.raises(ValueError, match=r"scores for 'b' have shape \(1, 3\) but its mask has shape \(3,\)"):
        select_global({"a": torch.zeros(2, 2), "b": torch.zeros(1, 3)}, _dense(), 1)


# select_layerwise


def test_select_layerwise_hand_values() -> None:
    masks = select_layerwise(_scores(), _dense(), {"a": 2, "b": 1})
    assert _bools(masks["a"]) == [[False, True], [True, False]]
    assert _bools(masks["b"]) == [True, False, False]
    assert masks.remaining_per_layer() == {"a": 2, "b": 1}


def test_select_layerwise_errors() -> None:
    current = Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([0, 1, 1])})
    with pytest.raises(ValueError, match=r"cannot keep 3 weights in 'b': only 2 of 3 remain"):
        select_layerwise(_scores(), current, {"a": 1, "b": 3})
    with pytest.raises(ValueError, match=r"keep must give a count for exactly the masked parameters; missing: \['b'\]"):
        select_layerwise(_scores(), current, {"a": 1})


def test_select_layerwise_never_revives_pruned_weights() -> None:
    current = Masks({"a": torch.tensor([[1, 0], [1, 1]]), "b": torch.tensor([0, 1, 1])})
    masks = select_layerwise(_scores(), current, {"a": 1, "b": 1})
    assert _bools(masks["a"]) == [[False, False], [True, False]]
    assert _bools(masks["b"]) == [False, False, True]


# prune_to_sparsity / prune_fraction


def test_scopes() -> None:
    assert SCOPES == ("global", "layerwise")
    with pytest.raises(ValueError, match=r"^scope must be one of global, layerwise, got 'local'\.$"):
        prune_to_sparsity(_scores(), _dense(), 0.5, scope="local")
    with pytest.raises(ValueError, match=r"^scope must be one of global, layerwise, got 'local'\.$"):
        prune_fraction(_scores(), _dense(), 0.5, scope="local")


def test_prune_to_sparsity_global() -> None:
    # round((1 - 4/7) * 7) = 3 kept: the same as select_global(..., 3).
    masks = prune_to_sparsity(_scores(), _dense(), 4 / 7)
    assert masks == select_global(_scores(), _dense(), 3)
    assert masks.sparsity() == pytest.approx(4 / 7)


def test_prune_to_sparsity_global_rejects_distribution() -> None:
    with pytest.raises(ValueError, match="distribution applies only to scope 'layerwise'"):
        prune_to_sparsity(_scores(), _dense(), 0.5, scope="global", distribution="erk")
    with pytest.raises(ValueError, match=r"target_sparsity must be in \[0, 1\), got 1.0"):
        prune_to_sparsity(_scores(), _dense(), 1.0)


def test_prune_to_sparsity_layerwise_uses_distribution() -> None:
    # uniform at 4/7: budget 3, exact 4 * 3/7 = 1.71 and 3 * 3/7 = 1.29 -> 1 + 1, one more to "a".
    masks = prune_to_sparsity(_scores(), _dense(), 4 / 7, scope="layerwise")
    assert masks.remaining_per_layer() == {"a": 2, "b": 1}
    custom = prune_to_sparsity(
        _scores(), _dense(), 0.0, scope="layerwise", distribution="custom", layer_sparsity={"a": 0.75, "b": 0.0}
    )
    assert custom.remaining_per_layer() == {"a": 1, "b": 3}
    assert _bools(custom["a"]) == [[False, True], [False, False]]


def test_prune_to_sparsity_cannot_grow_back() -> None:
    sparse = select_global(_scores(), _dense(), 2)
    with pytest.raises(ValueError, match="cannot keep 4 weights: only 2 of 7 remain"):
        prune_to_sparsity(_scores(), sparse, 0.5)


def test_prune_fraction_global_and_layerwise() -> None:
    current = Masks({"a": torch.tensor([[1, 1], [1, 1]]), "b": torch.tensor([0, 1, 1])})
    # Global: 6 remain, round(0.5 * 6) = 3 removed -> keep 0.9, 0.5, 0.7.
    masks = prune_fraction(_scores(), current, 0.5)
    assert _bools(masks["a"]) == [[False, True], [True, False]]
    assert _bools(masks["b"]) == [False, False, True]
    # Layerwise: a keeps 4 - round(2.0) = 2, b keeps 2 - round(1.0) = 1.
    masks = prune_fraction(_scores(), current, 0.5, scope="layerwise")
    assert masks.remaining_per_layer() == {"a": 2, "b": 1}
    assert _bools(masks["b"]) == [False, False, True]
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\), got 1.0"):
        prune_fraction(_scores(), current, 1.0)
    assert prune_fraction(_scores(), current, 0.0) == current


def test_selection_does_not_mutate_inputs() -> None:
    current = _dense()
    scores = _scores()
    before = {name: s.clone() for name, s in scores.items()}
    select_global(scores, current, 2)
    assert current.remaining() == 7
    assert all(mask.all() for mask in current.values())
    assert all(torch.equal(scores[name], before[name]) for name in scores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_selection_matches_cpu() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = {
        "a": torch.randint(0, 7, (50, 40), generator=generator).half(),
        "b": torch.randint(0, 7, (300,), generator=generator).half(),
    }
    dense = Masks.dense(scores)
    on_cpu = select_global(scores, dense, 700)
    on_cuda = select_global({name: s.cuda() for name, s in scores.items()}, dense.to("cuda"), 700)
    assert on_cuda["a"].is_cuda
    assert on_cuda.to("cpu") == on_cpu
    layerwise_cuda = select_layerwise(
        {name: s.cuda() for name, s in scores.items()}, dense.to("cuda"), {"a": 500, "b": 10}
    )
    assert layerwise_cuda.to("cpu") == select_layerwise(scores, dense, {"a": 500, "b": 10})
    bf16 = torch.randint(0, 3, (1000,), generator=generator).bfloat16()
    assert torch.equal(topk_mask(bf16.cuda(), 321).cpu(), topk_mask(bf16, 321))
