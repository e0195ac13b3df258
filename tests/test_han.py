"""Han et al.'s threshold under each ``std_of`` rule, on hand-computed layers."""

from __future__ import annotations

import math

import pytest
import torch

from pruning_callbacks import HanMagnitude
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.selection import layer_stds, prune_below_std_threshold

# Eight weights, one already pruned (the 0.0). Whole tensor, zeros included: mean 0.33125, squared deviations summing
# to 4.2346875 over n - 1 = 7, std 0.777789. The seven survivors alone: mean 0.378571, std 0.827575.
WEIGHTS = torch.tensor([0.1, -0.2, 0.3, -0.4, 2.0, 0.0, -0.05, 0.9])
MASK = torch.tensor([1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)


def prune(weights: torch.Tensor, mask: torch.Tensor, **kwargs: object) -> list[bool]:
    return prune_below_std_threshold({"w": weights}, Masks({"w": mask}), **kwargs)["w"].tolist()


def test_layer_rule_takes_the_std_of_the_whole_tensor_with_its_zeros():
    whole = math.sqrt(sum((w - 0.33125) ** 2 for w in WEIGHTS.tolist()) / 7)
    assert whole == pytest.approx(0.777789, abs=1e-6)
    assert layer_stds({"w": WEIGHTS}, ["w"])["w"] == pytest.approx(whole)
    # Threshold 0.5 * 0.7778 = 0.3889: -0.4, 2.0 and 0.9 reach it.
    assert prune(WEIGHTS, MASK, quality=0.5) == [False, False, False, True, True, False, False, True]
    # Threshold 0.3 * 0.7778 = 0.2333: 0.3 survives too.
    assert prune(WEIGHTS, MASK, quality=0.3) == [False, False, True, True, True, False, False, True]


def test_remaining_rule_measures_only_the_survivors():
    alive = torch.tensor([0.1, -0.2, 0.3, -0.4, 2.0, -0.05, 0.9], dtype=torch.float64)
    threshold = 0.5 * float(alive.std())  # 0.5 * 0.8276 = 0.4138: -0.4 now falls below it
    assert threshold == pytest.approx(0.413788, abs=1e-5)
    assert prune(WEIGHTS, MASK, quality=0.5, std_of="remaining") == [
        False, False, False, False, True, False, False, True
    ]  # fmt: skip


def test_initial_rule_uses_the_given_dense_std():
    assert prune(WEIGHTS, MASK, quality=1.0, std_of="initial", initial_stds={"w": 0.25}) == [
        False, False, True, True, True, False, False, True
    ]  # fmt: skip
    with pytest.raises(ValueError, match="std_of 'initial' needs the dense standard deviation of every layer"):
        prune(WEIGHTS, MASK, quality=1.0, std_of="initial")
    with pytest.raises(ValueError, match="std_of must be one of layer, initial, remaining, got 'all'"):
        prune(WEIGHTS, MASK, quality=1.0, std_of="all")


@pytest.mark.parametrize("std_of", ["layer", "initial"])
def test_a_second_pass_on_unchanged_weights_prunes_nothing_more(std_of):
    weights = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    masks = Masks.dense({"w": weights})
    stds = layer_stds({"w": weights}, ["w"])
    first = prune_below_std_threshold({"w": weights}, masks, 1.0, std_of=std_of, initial_stds=stds)
    pruned = weights * first["w"]  # what the mask applier leaves in the tensor
    second = prune_below_std_threshold({"w": pruned}, first, 1.0, std_of=std_of, initial_stds=stds)
    assert 0.6 < first.sparsity() < 0.75  # about 68% of a Gaussian lies within 1 std
    assert second == first


def test_remaining_rule_compounds_without_fine_tuning():
    """The behaviour the default no longer has: three passes at quality 1 keep 31.8%, 11.2%, 4.0% of a Gaussian."""
    weights = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    masks = Masks.dense({"w": weights})
    kept = []
    for _ in range(3):
        masks = prune_below_std_threshold({"w": weights * masks["w"]}, masks, 1.0, std_of="remaining")
        kept.append(1 - masks.sparsity())
    assert kept[0] == pytest.approx(0.317, abs=0.01)
    assert kept[1] < 0.5 * kept[0] and kept[2] < 0.5 * kept[1]


def test_han_rejects_an_unknown_std_rule_in_one_line():
    with pytest.raises(ValueError, match="std_of must be one of layer, initial, remaining, got 'dense'"):
        HanMagnitude(quality=1.0, std_of="dense")


def test_han_keeps_the_initial_stds_in_its_state():
    pruner = HanMagnitude(quality=1.0, std_of="initial")
    pruner.initial_stds = {"conv1.weight": 0.125}
    restored = HanMagnitude(quality=1.0, std_of="initial")
    restored.load_state_dict(pruner.state_dict())
    assert restored.initial_stds == {"conv1.weight": 0.125}
