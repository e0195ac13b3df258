"""The prune-at-init pipeline: exponential schedule, floors, SynFlow's exact sparsity, layer-wise ratios, errors."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_callbacks import EarlyBird
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import prunable_parameters
from pruning_callbacks.engine.recipes import (
    MaskRecipe,
    exponential_keep_counts,
    iterative_global_prune,
    select_global_with_floor,
)
from pruning_callbacks.engine.scores import ScoreContext, compute_scores
from pruning_callbacks.engine.seeding import derive_seed
from pruning_callbacks.engine.selection import select_global
from tests.test_prune_at_init_scores import (
    TEMPERATURE,
    all_samples,
    batches,
    reference_gradient,
    reference_hessian_product,
    two_layer_net,
)

# ----------------------------------------------------------------------------------------------------------------------
# Engine pieces on hand-computed values.


def test_exponential_keep_counts_are_absolute_targets_that_end_exactly():
    # d = 0.1: round(1000 * 0.1 ** (1/2)) = round(316.23) = 316, then round(0.1 * 1000) = 100.
    assert exponential_keep_counts(1000, 0.9, 2) == [316, 100]
    assert exponential_keep_counts(1000, 0.9, 1) == [100]
    assert exponential_keep_counts(1000, 0.0, 3) == [1000, 1000, 1000]
    counts = exponential_keep_counts(24_112, 0.999, 100)
    assert counts[-1] == round(0.001 * 24_112) == 24
    assert all(later <= earlier for earlier, later in pairwise(counts))
    assert counts[49] == round(24_112 * 0.001**0.5)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        exponential_keep_counts(10, 0.5, 0)


def test_floor_keeps_each_layers_best_weight_and_otherwise_equals_global_top_k():
    masks = Masks.dense({"a": torch.zeros(4), "b": torch.zeros(6)})
    scores = {"a": torch.tensor([0.1, 0.3, 0.2, 0.0]), "b": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])}
    plain = select_global(scores, masks, 3)
    assert plain.remaining_per_layer() == {"a": 0, "b": 3}  # plain global top-k empties "a"
    floored = select_global_with_floor(scores, masks, 3, min_per_layer=1)
    assert floored["a"].tolist() == [False, True, False, False]
    assert floored["b"].tolist() == [True, True, False, False, False, False]
    assert select_global_with_floor(scores, masks, 3, min_per_layer=0) == plain
    # Where global top-k already leaves every layer a weight, the floor changes nothing.
    assert select_global_with_floor(scores, masks, 8, min_per_layer=1) == select_global(scores, masks, 8)
    assert select_global_with_floor(scores, masks, 4, min_per_layer=2).remaining_per_layer() == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="cannot keep only 1 weights when each of the 2 layers keeps at least 1"):
        select_global_with_floor(scores, masks, 1, min_per_layer=1)


def test_iterative_pruning_rescores_the_masked_net_and_masks_only_shrink():
    masks = Masks.dense({"a": torch.zeros(10), "b": torch.zeros(30)})
    seen: list[Masks] = []

    def scores_for(current: Masks, iteration: int) -> dict[str, torch.Tensor]:
        seen.append(current)
        generator = torch.Generator().manual_seed(iteration)
        return {name: torch.rand(mask.shape, generator=generator) for name, mask in current.items()}

    final = iterative_global_prune(scores_for, masks, 0.75, iterations=3)
    assert final.remaining() == 10 and min(final.remaining_per_layer().values()) >= 1
    assert [m.remaining() for m in seen] == [40, round(40 * 0.25 ** (1 / 3)), round(40 * 0.25 ** (2 / 3))]
    chain = [*seen, final]
    for earlier, later in pairwise(chain):
        assert later.is_subset_of(earlier)


# ----------------------------------------------------------------------------------------------------------------------
# SynFlow on a small conv net: exact sparsity, no empty layer, data-free.


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.linear(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def small_net() -> SmallConvNet:
    torch.manual_seed(0)
    return SmallConvNet()


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99, 0.999])
def test_synflow_reaches_the_exact_sparsity_for_any_iteration_count_without_emptying_a_layer(small_net, sparsity):
    params = prunable_parameters(small_net)
    total = sum(p.numel() for p in params.values())
    assert total == 24_112
    before = {name: value.clone() for name, value in small_net.state_dict().items()}
    for iterations in (1, 10, 100):
        recipe = MaskRecipe(sparsity, "synflow", "global", iterations=iterations, input_shape=(3, 4, 4))
        masks = recipe.masks(params, seed=0, module=small_net)
        assert masks.remaining() == round((1 - sparsity) * total), (sparsity, iterations)
        assert min(masks.remaining_per_layer().values()) >= 1, (sparsity, iterations, masks.remaining_per_layer())
    assert all(torch.equal(value, before[name]) for name, value in small_net.state_dict().items())


def test_synflow_iterations_default_to_100_and_differ_from_one_shot(small_net):
    params = prunable_parameters(small_net)
    recipe = MaskRecipe(0.99, "synflow", "global", input_shape=(3, 4, 4))
    assert recipe.rounds == 100 and MaskRecipe(0.99, "snip", "global").rounds == 1
    iterative = recipe.masks(params, seed=0, module=small_net)
    one_shot = MaskRecipe(0.99, "synflow", "global", iterations=1, input_shape=(3, 4, 4)).masks(
        params, seed=0, module=small_net
    )
    assert iterative.remaining() == one_shot.remaining() and iterative != one_shot


def test_min_weights_per_layer_zero_allows_and_the_default_forbids_emptying_layers(small_net):
    params = prunable_parameters(small_net)
    # Magnitude at init, globally, at 99.9%: the small first layer's weights are the largest (fan-in 27), so plain
    # global top-24 would keep only the first layer's weights.
    free = MaskRecipe(0.999, "magnitude", "global", min_weights_per_layer=0).masks(params, seed=0)
    assert 0 in free.remaining_per_layer().values()
    floored = MaskRecipe(0.999, "magnitude", "global").masks(params, seed=0)
    assert min(floored.remaining_per_layer().values()) == 1 and floored.remaining() == free.remaining()
    with pytest.raises(ValueError, match=r"largest feasible sparsity is 0\.9998.*or set min_weights_per_layer: 0"):
        MaskRecipe(0.99995, "synflow", "global").check_feasible({name: p.numel() for name, p in params.items()})


# ----------------------------------------------------------------------------------------------------------------------
# Layer-wise ratios, hand-computed for a three-layer MLP: A (8, 4) = 32, B (8, 8) = 64, C (2, 8) = 16; 112 weights.
# Raw ERK = ER density (n_in + n_out) / (n_in n_out): A 12/32, B 16/64, C 10/16.


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


HAND_COUNTS = {
    # keep 28: 0.25 each.
    ("uniform", 0.75): (8, 16, 4),
    # keep 28 = eps (12 + 16 + 10) -> exact 8.842, 11.789, 7.368 -> floors 8, 11, 7 and the two largest remainders
    # (A .842, B .789) get one more.
    ("erk", 0.75): (9, 12, 7),
    ("er", 0.75): (9, 12, 7),
    # C dense (16); 12 left = eps (12 + 16): exact 5.143, 6.857 -> 5, 6 and B's remainder .857 gets one more.
    ("erk_plus", 0.75): (5, 7, 16),
    # keep 56: A dense (32); 24 over B and C at 0.3 >= 0.2: 19.2, 4.8 -> 19, 4 and C's .8 gets one more.
    ("uniform_plus", 0.5): (32, 19, 5),
}


@pytest.mark.parametrize(("distribution", "sparsity"), list(HAND_COUNTS), ids=[name for name, _ in HAND_COUNTS])
def test_random_pruning_with_each_distribution_gives_the_hand_computed_layer_counts(distribution, sparsity):
    net = mlp()
    params = prunable_parameters(net)
    recipe = MaskRecipe(sparsity, "random", "layerwise", distribution)
    masks = recipe.masks(params, seed=3)
    assert tuple(masks.remaining_per_layer().values()) == HAND_COUNTS[(distribution, sparsity)]
    assert masks.remaining() == round((1 - sparsity) * 112)


def reference_ratio_counts(net, data, method: str, keep: int) -> dict[str, int]:
    x, y = all_samples(data)
    if method == "snip":
        grads, _ = reference_gradient(net, x, y)
        scores = {name: (grads[name] * net.get_parameter(name).detach()).abs() for name in grads}
    else:
        grads, _ = reference_gradient(net, x, y, TEMPERATURE)
        product = reference_hessian_product(net, x, y, grads, TEMPERATURE)
        scores = {name: net.get_parameter(name).detach() * product[name] for name in grads}
    flat = torch.cat([scores[name].reshape(-1) for name in scores])
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept[torch.topk(flat, keep).indices] = True
    return {"0.weight": int(kept[:24].sum()), "2.weight": int(kept[24:].sum())}


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_ratio_from_takes_the_methods_layer_counts_and_draws_positions_at_random(method):
    net, data = two_layer_net(), batches()
    params = {"0.weight": net[0].weight, "2.weight": net[2].weight}
    expected = reference_ratio_counts(net, data, method, keep=round(0.75 * 42))
    method_masks = MaskRecipe(0.25, method, "global").masks(params, seed=0, module=net, batches=data)
    assert method_masks.remaining_per_layer() == expected
    recipe = MaskRecipe(0.25, "random", "layerwise", ratio_from=method)
    assert recipe.needs_batches and recipe.describe() == f"random ({method} ratios)"
    masks = recipe.masks(params, seed=0, module=net, batches=data)
    assert masks.remaining_per_layer() == expected
    assert masks != method_masks
    random_scores = compute_scores(
        "random", ScoreContext(params, Masks.dense(params), seed=derive_seed(0, "prune_at_init", "random"))
    )
    for name, mask in masks.items():  # the positions are the layer's top random scores
        assert float(random_scores[name][mask].min()) >= float(random_scores[name][~mask].max())


def test_ratio_from_synflow_uses_synflows_counts(small_net):
    params = prunable_parameters(small_net)
    synflow = MaskRecipe(0.95, "synflow", "global", iterations=5, input_shape=(3, 4, 4))
    ratio = MaskRecipe(0.95, "random", "layerwise", ratio_from="synflow", iterations=5, input_shape=(3, 4, 4))
    expected = synflow.masks(params, seed=0, module=small_net).remaining_per_layer()
    assert ratio.masks(params, seed=0, module=small_net).remaining_per_layer() == expected


def test_magnitude_at_init_in_both_scopes():
    net = mlp()
    params = prunable_parameters(net)
    layerwise = MaskRecipe(0.75, "magnitude", "layerwise").masks(params, seed=0)
    assert tuple(layerwise.remaining_per_layer().values()) == (8, 16, 4)
    global_masks = MaskRecipe(0.75, "magnitude", "global").masks(params, seed=0)
    magnitudes = torch.cat([p.detach().abs().reshape(-1) for p in params.values()])
    kept = torch.cat([global_masks[name].reshape(-1) for name in params])
    assert int(kept.sum()) == 28 and float(magnitudes[kept].min()) >= float(magnitudes[~kept].max())


# ----------------------------------------------------------------------------------------------------------------------
# Configuration errors: one line, at construction.

BAD_RECIPES = [
    ({"score": "taylor"}, "unknown score 'taylor'; known scores: gradient, grasp, magnitude, random, snip, synflow"),
    ({"score": "random", "ratio_from": "fisher"}, "unknown ratio_from .fisher.; known scores: gradient, grasp, magn"),
    ({"score": "synflow"}, "score 'synflow' ranks all layers jointly .* needs scope 'global', got 'layerwise'"),
    ({"score": "random", "ratio_from": "snip", "scope": "global"}, "ratio_from sets per-layer counts, so it needs"),
    ({"score": "random", "ratio_from": "snip", "distribution": "erk"}, "ratio_from 'snip' replaces the distribution"),
    ({"score": "snip", "scope": "global", "iterations": 0}, r"iterations must be an integer >= 1 or null, got 0"),
    ({"score": "random", "distribution": "erk", "iterations": 10}, "iterations > 1 needs a global ranking"),
    ({"score": "snip", "scope": "global", "num_batches": 0}, "num_batches must be an integer >= 1, got 0"),
    ({"score": "grasp", "scope": "global", "temperature": -1.0}, "temperature must be a positive number, got -1.0"),
    ({"score": "magnitude", "min_weights_per_layer": -1}, "min_weights_per_layer must be an integer >= 0, got -1"),
    ({"score": "synflow", "scope": "global", "input_shape": [3, 0, 32]}, "input_shape must be a list of positive"),
    ({"target_sparsity": 1.0, "score": "snip", "scope": "global"}, r"target_sparsity must be in \[0, 1\), got 1.0"),
    ({"score": "snip", "scope": "global", "bn_mode": "test"}, "bn_mode must be one of eval, train or null, got 'test'"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_RECIPES)
def test_bad_prune_at_init_options_fail_at_construction_in_one_line(kwargs, message):
    from pruning_callbacks.callbacks.prune_at_init import PruneAtInit

    with pytest.raises(ValueError, match=message) as error:
        PruneAtInit(**{"target_sparsity": 0.9, **kwargs})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": "snip"}, "EarlyBird tracks data-free scores .* score 'snip' reads training batches"),
        ({"window": 1}, "window must be an integer >= 2, got 1"),
        ({"threshold": 0.0}, r"threshold must be in \(0, 1\], got 0.0"),
        ({"threshold": 1.5}, r"threshold must be in \(0, 1\], got 1.5"),
        ({"stop": "yes"}, "stop must be true or false, got 'yes'"),
        ({"target_sparsity": -0.5}, r"target_sparsity must be in \[0, 1\), got -0.5"),
    ],
)
def test_bad_early_bird_options_fail_at_construction_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        EarlyBird(**{"target_sparsity": 0.5, **kwargs})
    assert "\n" not in str(error.value)


def test_snip_ratio_baseline_inherits_snips_eval_mode_default():
    """The random baseline with SNIP's per-layer counts ranks with SNIP, so it scores in SNIP's mode."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.2, 3.0)
    params = {"0.weight": net[0].weight, "4.weight": net[4].weight}
    data = [(torch.randn(16, 3, 4, 4), torch.randint(0, 4, (16,)))]

    def counts(**kwargs: object) -> dict[str, int]:
        recipe = MaskRecipe(0.8, "random", "layerwise", ratio_from="snip", **kwargs)
        return recipe.masks(params, seed=0, module=net, batches=data).remaining_per_layer()

    def snip_counts(mode: str) -> dict[str, int]:
        return MaskRecipe(0.8, "snip", "global", bn_mode=mode).masks(params, seed=0, module=net, batches=data)

    assert counts() == counts(bn_mode="eval") == snip_counts("eval").remaining_per_layer()
    assert counts(bn_mode="train") == snip_counts("train").remaining_per_layer()


def test_recipe_describes_itself():
    assert MaskRecipe(0.9, "synflow", "global").describe() == "synflow (global, 100 iterations)"
    assert MaskRecipe(0.9, "random", "layerwise", "erk").describe() == "random (layerwise, erk)"
    assert math.isclose(MaskRecipe(0.9, "grasp", "global").options["temperature"], 200.0)
