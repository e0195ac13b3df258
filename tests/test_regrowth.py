"""Engine tests of drop and grow: hand-computed tiny layers, exact counts, deterministic ties, properties."""

from __future__ import annotations

import math

import pytest
import torch

from pruning_callbacks.engine import regrowth
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.regrowth import drop_and_grow, drop_smallest, grow_largest, regrowth_count
from pruning_callbacks.engine.scores import SCORES, ScoreContext, compute_scores, register_score


def test_regrowth_count_is_floor_of_fraction_of_active_capped_by_inactive():
    assert regrowth_count(active=10, numel=100, fraction=0.25) == 2  # floor(2.5), RigL's int() rule
    assert regrowth_count(active=10, numel=100, fraction=0.3) == 3
    assert regrowth_count(active=90, numel=100, fraction=0.3) == 10  # only 10 inactive connections can grow
    assert regrowth_count(active=100, numel=100, fraction=0.3) == 0  # a dense layer never changes
    assert regrowth_count(active=0, numel=100, fraction=0.3) == 0
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got 1.5"):
        regrowth_count(10, 100, 1.5)
    with pytest.raises(ValueError, match=r"active must be in \[0, 100\], got 101"):
        regrowth_count(101, 100, 0.1)


def test_tiny_layer_by_hand():
    # 3 x 4 layer, 6 active weights. Fraction 0.5 -> floor(0.5 * 6) = 3 dropped and 3 grown.
    weights = torch.tensor(
        [
            [0.9, 0.0, -0.1, 0.0],
            [0.0, 0.5, 0.0, -0.05],
            [0.3, 0.0, 0.7, 0.0],
        ]
    )
    mask = weights != 0
    grads = torch.tensor(
        [
            [9.0, 0.2, 8.0, -0.6],
            [0.1, 7.0, -0.9, 6.0],
            [5.0, -0.4, 4.0, 0.3],
        ]
    )
    result = drop_and_grow(Masks({"w": mask}), {"w": weights}, {"w": grads.abs()}, fraction=0.5)
    # Smallest active magnitudes: 0.05 at (1, 3), 0.1 at (0, 2), 0.3 at (2, 0).
    expected_dropped = torch.zeros(3, 4, dtype=torch.bool)
    expected_dropped[1, 3] = expected_dropped[0, 2] = expected_dropped[2, 0] = True
    # Largest |grad| among the inactive ones: 0.9 at (1, 2), 0.6 at (0, 3), 0.4 at (2, 1). The just-dropped (0, 2),
    # (1, 3), (2, 0) have larger gradients (8, 6, 5) but are not candidates.
    expected_grown = torch.zeros(3, 4, dtype=torch.bool)
    expected_grown[1, 2] = expected_grown[0, 3] = expected_grown[2, 1] = True
    assert torch.equal(result.dropped["w"], expected_dropped)
    assert torch.equal(result.grown["w"], expected_grown)
    assert torch.equal(result.masks["w"], (mask & ~expected_dropped) | expected_grown)
    assert result.counts == {"w": 3}
    assert result.masks.remaining() == 6


def test_ties_are_broken_by_position():
    weights = torch.tensor([0.5, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    dropped = drop_smallest(weights, mask, 2)
    assert dropped.tolist() == [False, True, True, False, False, False, False, False]  # lower index dropped first
    scores = torch.tensor([9.0, 9.0, 9.0, 9.0, 1.0, 3.0, 3.0, 3.0])
    grown = grow_largest(scores, ~mask, 2)
    assert grown.tolist() == [False, False, False, False, False, True, True, False]  # lower index grown first


def test_nan_and_inf_scores_do_not_break_selection():
    scores = torch.tensor([float("nan"), float("inf"), 1.0, 2.0])
    grown = grow_largest(scores, torch.tensor([True, True, True, False]), 2)
    assert grown.tolist() == [False, True, True, False]


def test_shape_and_count_errors_are_one_line():
    with pytest.raises(ValueError, match=r"weights have shape \(2, 2\) but the mask has shape \(4,\)"):
        drop_smallest(torch.ones(2, 2), torch.ones(4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        grow_largest(torch.ones(4), torch.ones(4, dtype=torch.bool), -1)
    masks = Masks({"a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"grow_scores must cover every masked parameter; missing: \['a'\]"):
        drop_and_grow(masks, {"a": torch.ones(3)}, {}, 0.1)


@pytest.mark.parametrize("seed", range(5))
def test_properties_on_random_layers(seed):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"conv": (8, 4, 3, 3), "fc": (10, 32), "dense": (5, 5)}
    weights = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    masks = {name: torch.rand(shape, generator=generator) < 0.2 for name, shape in shapes.items()}
    masks["dense"] = torch.ones(shapes["dense"], dtype=torch.bool)
    weights = {name: value * masks[name] for name, value in weights.items()}
    scores = {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()}
    fraction = float(torch.rand((), generator=generator))
    old = Masks(masks)
    result = drop_and_grow(old, weights, scores, fraction)
    assert result.masks.remaining_per_layer() == old.remaining_per_layer()
    for name, mask in old.items():
        dropped, grown, new = result.dropped[name], result.grown[name], result.masks[name]
        count = result.counts[name]
        assert count == regrowth_count(int(mask.sum()), mask.numel(), fraction)
        assert int(dropped.sum()) == int(grown.sum()) == count
        assert not (dropped & ~mask).any() and not (grown & mask).any()  # drop active, grow inactive
        assert torch.equal(new, (mask & ~dropped) | grown)
        survivors, not_grown = mask & ~dropped, ~mask & ~grown
        if count and survivors.any():
            assert weights[name][dropped].abs().max() <= weights[name][survivors].abs().min()
        if count and not_grown.any():
            assert scores[name][grown].min() >= scores[name][not_grown].max()
    assert result.counts["dense"] == 0 and torch.equal(result.masks["dense"], masks["dense"])


def test_channels_last_weights_give_the_same_masks():
    generator = torch.Generator().manual_seed(3)
    weights = torch.randn(8, 4, 3, 3, generator=generator)
    mask = torch.rand(8, 4, 3, 3, generator=generator) < 0.3
    scores = torch.rand(8, 4, 3, 3, generator=generator)
    plain = drop_and_grow(Masks({"w": mask}), {"w": weights}, {"w": scores}, 0.3)
    strided = drop_and_grow(
        Masks({"w": mask}),
        {"w": weights.contiguous(memory_format=torch.channels_last)},
        {"w": scores.contiguous(memory_format=torch.channels_last)},
        0.3,
    )
    assert plain.masks == strided.masks


def test_gradient_grow_score_is_absolute_dense_gradient():
    params = {"a": torch.zeros(2, 2), "b": torch.zeros(3)}
    masks = Masks.dense(params)
    grads = {"a": torch.tensor([[-2.0, 1.0], [0.5, -0.25]]), "b": None}
    scores = compute_scores("gradient", ScoreContext(params, masks, seed=0, grads=grads))
    assert torch.equal(scores["a"], grads["a"].abs()) and torch.equal(scores["b"], torch.zeros(3))
    with pytest.raises(ValueError, match="score 'gradient' needs the dense gradients"):
        compute_scores("gradient", ScoreContext(params, masks, seed=0))


def test_random_grow_score_is_a_pure_function_of_the_seed():
    params = {"a": torch.zeros(4, 4), "b": torch.zeros(8)}
    masks = Masks.dense(params)
    first = compute_scores("random", ScoreContext(params, masks, seed=11))
    again = compute_scores("random", ScoreContext(params, masks, seed=11))
    other = compute_scores("random", ScoreContext(params, masks, seed=12))
    assert all(torch.equal(first[name], again[name]) for name in params)
    assert not torch.equal(first["a"], other["a"])
    assert all(0 <= float(value.min()) and float(value.max()) < 1 for value in first.values())


def test_grow_scores_live_in_the_one_score_registry():
    assert {"gradient", "random", "magnitude", "snip", "grasp", "synflow"} <= set(SCORES)
    with pytest.raises(ValueError, match="score 'random' is already registered"):
        register_score("random")


def test_the_old_grow_score_names_still_work_with_a_deprecation_warning():
    params = {"a": torch.zeros(2, 2)}
    masks = Masks.dense(params)
    grads = {"a": torch.tensor([[-2.0, 1.0], [0.5, -0.25]])}
    with pytest.warns(DeprecationWarning, match="one score registry"):
        context = regrowth.GrowContext(params, masks, seed=0, grads=grads)
    with pytest.warns(DeprecationWarning, match="use pruning_callbacks.engine.scores.get_score"):
        score = regrowth.get_grow_score("gradient")
    assert torch.equal(score(context)["a"], grads["a"].abs())
    assert regrowth.GROW_SCORES is SCORES
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="unknown score 'momentum'"):
        regrowth.get_grow_score("momentum")


def test_fraction_one_moves_every_movable_connection():
    mask = torch.tensor([True, True, False, False, False])
    result = drop_and_grow(Masks({"w": mask}), {"w": torch.tensor([1.0, 2.0, 0, 0, 0])}, {"w": torch.arange(5.0)}, 1.0)
    assert result.counts == {"w": 2}
    assert result.masks["w"].tolist() == [False, False, False, True, True]
    assert math.isclose(result.masks.sparsity(), 0.6)
