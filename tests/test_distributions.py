"""Unit tests for layer-wise density distributions, on hand-computed shapes and on ResNet18's."""

from __future__ import annotations

import math

import pytest
import torch

from pruning_callbacks.engine.distributions import DISTRIBUTIONS, layer_densities, layer_keep_counts


def _shapes(**shapes: tuple[int, ...]) -> dict[str, torch.Size]:
    return {name: torch.Size(shape) for name, shape in shapes.items()}


def _resnet18_cifar_shapes() -> dict[str, torch.Size]:
    """The 21 prunable weights of the CIFAR ResNet18 (kuangliu layout), in named_modules order."""
    shapes = {"conv1.weight": (64, 3, 3, 3)}
    in_planes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (planes, in_planes, 3, 3)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            if in_planes != planes:
                shapes[f"{prefix}.shortcut.0.weight"] = (planes, in_planes, 1, 1)
            in_planes = planes
    shapes["linear.weight"] = (10, 512)
    return {name: torch.Size(shape) for name, shape in shapes.items()}


RESNET18 = _resnet18_cifar_shapes()


def test_resnet18_shapes_are_right() -> None:
    assert len(RESNET18) == 21
    assert sum(math.prod(shape) for shape in RESNET18.values()) == 11_164_352
    assert next(iter(RESNET18)) == "conv1.weight"
    assert list(RESNET18)[-1] == "linear.weight"
    assert RESNET18["layer2.0.shortcut.0.weight"] == (128, 64, 1, 1)


# uniform


def test_uniform_exact_split() -> None:
    shapes = _shapes(a=(2, 5), b=(3, 10), c=(6, 10))
    assert layer_keep_counts("uniform", shapes, 0.5) == {"a": 5, "b": 15, "c": 30}
    assert layer_densities("uniform", shapes, 0.5) == {"a": 0.5, "b": 0.5, "c": 0.5}


def test_uniform_remainder_goes_to_earlier_layer_on_ties() -> None:
    # Budget 5 of 10 at density 0.5: exact 1.5, 1.5, 2.0 -> floors 1, 1, 2 and the one left over goes
    # to "a" (equal remainder 0.5 with "b", earlier layer wins).
    shapes = _shapes(a=(1, 3), b=(1, 3), c=(1, 4))
    assert layer_keep_counts("uniform", shapes, 0.5) == {"a": 2, "b": 1, "c": 2}


def test_zero_sparsity_keeps_everything() -> None:
    shapes = _shapes(a=(1, 3), b=(4, 4))
    for name in DISTRIBUTIONS:
        assert layer_keep_counts(name, shapes, 0.0) == {"a": 3, "b": 16}


# uniform_plus

UPLUS = _shapes(first=(4, 3), middle=(10, 10), last=(2, 10))  # 12 + 100 + 20 = 132 weights


def test_uniform_plus_above_the_floor() -> None:
    # Budget 66: first dense (12), the other 120 weights at (66 - 12) / 120 = 0.45 >= 0.2.
    assert layer_keep_counts("uniform_plus", UPLUS, 0.5) == {"first": 12, "middle": 45, "last": 9}


def test_uniform_plus_last_layer_floor() -> None:
    # Budget round(0.2 * 132) = 26: (26 - 12) / 120 < 0.2, so last keeps 20% (4) and middle (26-12-4)/100.
    assert layer_keep_counts("uniform_plus", UPLUS, 0.8) == {"first": 12, "middle": 10, "last": 4}
    assert layer_densities("uniform_plus", UPLUS, 0.8) == {"first": 1.0, "middle": 0.1, "last": 0.2}


def test_uniform_plus_infeasible() -> None:
    # Budget round(0.05 * 132) = 7 < 12 + 0.2 * 20 = 16; the largest feasible sparsity is 1 - 16/132.
    with pytest.raises(ValueError) as error:
        layer_keep_counts("uniform_plus", UPLUS, 0.95)
    message = str(error.value)
    assert message.startswith("distribution 'uniform_plus' cannot reach sparsity 0.94697")
    assert message.endswith("the largest feasible sparsity is 0.878788.")


def test_uniform_plus_custom_first_and_last() -> None:
    # "middle" dense (100 weights), "first" the classifier. Budget 110 leaves 10 for 32 weights (0.3125 each):
    # exact 3.75 and 6.25 -> 3 + 6, the one left goes to "first".
    counts = layer_keep_counts("uniform_plus", UPLUS, 1 - 110 / 132, first_layer="middle", last_layer="first")
    assert counts == {"first": 4, "middle": 100, "last": 6}
    # Budget 105 leaves 5 < 0.2 * 32: "first" gets its 20% floor (2.4), "last" the other 2.6 -> 2 + 3.
    counts = layer_keep_counts("uniform_plus", UPLUS, 1 - 105 / 132, first_layer="middle", last_layer="first")
    assert counts == {"first": 2, "middle": 100, "last": 3}
    with pytest.raises(ValueError, match=r"^first_layer 'nope' is not one of the layers: first, middle, last\.$"):
        layer_keep_counts("uniform_plus", UPLUS, 0.5, first_layer="nope")


# er and erk

CONV_FC = _shapes(conv=(8, 4, 3, 3), fc=(10, 8))  # 288 + 80 = 368 weights


def test_er_uses_first_two_dims() -> None:
    # raw: conv (4 + 8) / 32 = 0.375, fc (8 + 10) / 80 = 0.225; budget 184.
    # eps = 184 / (0.375 * 288 + 0.225 * 80) = 184 / 126; exact 157.71 and 26.29 -> 157 + 26 = 183,
    # the one left goes to conv (remainder 0.71).
    assert layer_keep_counts("er", CONV_FC, 0.5) == {"conv": 158, "fc": 26}


def test_er_rejects_one_dimensional_shapes() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions; 'v' is \\(3,\\)"):
        layer_keep_counts("er", _shapes(v=(3,), w=(2, 2)), 0.5)


def test_erk_counts_kernel_dims_and_densifies_fc() -> None:
    # raw: conv (8+4+3+3)/288 = 0.0625, fc 18/80 = 0.225; raw * numel = 18 each; eps = 184/36 = 5.11 puts
    # fc at 1.15 > 1, so fc goes dense (80) and conv gets the other 104.
    assert layer_keep_counts("erk", CONV_FC, 0.5) == {"conv": 104, "fc": 80}


ERK = _shapes(small=(2, 2), mid=(10, 10), big=(20, 40))  # raw 1.0, 0.2, 0.075; 4 + 100 + 800 = 904 weights


def test_erk_small_layer_goes_dense_and_loop_resolves() -> None:
    # Budget round(0.2 * 904) = 181. eps = 181 / 84 = 2.15 puts small at 2.15 -> dense.
    # Re-solve: eps = 177 / 80 = 2.2125, mid 0.4425 (44.25), big 0.1659375 (132.75) -> 44 + 132 + 4 = 180,
    # the one left goes to big (remainder 0.75).
    assert layer_keep_counts("erk", ERK, 0.8) == {"small": 4, "mid": 44, "big": 133}
    assert layer_densities("erk", ERK, 0.8) == pytest.approx({"small": 1.0, "mid": 0.44, "big": 133 / 800})


def test_erk_second_layer_goes_dense_only_after_re_solving() -> None:
    # Budget round(0.4535 * 904) = 410. eps = 410 / 84 = 4.88: small 4.88 (dense), mid 0.976 (fits).
    # Re-solve: eps = 406 / 80 = 5.075: mid 1.015 > 1 -> dense. Re-solve: eps = 306 / 60 = 5.1: big 0.3825.
    assert layer_keep_counts("erk", ERK, 0.5465) == {"small": 4, "mid": 100, "big": 306}


def test_erk_power_scale_zero_is_uniform() -> None:
    assert layer_keep_counts("erk", ERK, 0.8, erk_power_scale=0.0) == layer_keep_counts("uniform", ERK, 0.8)


# erk_plus

PLUS = _shapes(conv=(8, 4, 3, 3), mid=(16, 8, 3, 3), fc=(2, 10))  # 288 + 1152 + 20 = 1460; raw*numel 18, 30, 12


def test_erk_against_erk_plus() -> None:
    # Budget 73. erk: eps = 73 / 60, exact 21.9, 36.5, 14.6 -> 21 + 36 + 14 = 71; two left go to conv (.9)
    # and fc (.6).
    assert layer_keep_counts("erk", PLUS, 0.95) == {"conv": 22, "mid": 36, "fc": 15}
    # erk_plus: fc dense (20), eps = 53 / 48, exact 19.875 and 33.125 -> 19 + 33; one left goes to conv.
    assert layer_keep_counts("erk_plus", PLUS, 0.95) == {"conv": 20, "mid": 33, "fc": 20}


def test_erk_plus_infeasible() -> None:
    # Budget round(0.01 * 1460) = 15 < 20 dense classifier weights.
    with pytest.raises(ValueError) as error:
        layer_keep_counts("erk_plus", PLUS, 0.99)
    assert str(error.value) == (
        "distribution 'erk_plus' cannot reach sparsity 0.989726: the dense last layer alone would keep 20 of "
        "1460 weights, so the largest feasible sparsity is 0.986301."
    )


# custom

CUSTOM = _shapes(**{"conv1.weight": (4, 3, 3, 3), "layer1.0.conv1.weight": (4, 4, 3, 3), "linear.weight": (10, 4)})


def test_custom_map_by_module_name_and_glob() -> None:
    layer_sparsity = {"conv1": 0.0, "layer1.*": 0.75, "linear.weight": 0.5}
    assert layer_keep_counts("custom", CUSTOM, None, layer_sparsity=layer_sparsity) == {
        "conv1.weight": 108,
        "layer1.0.conv1.weight": 36,
        "linear.weight": 20,
    }


def test_custom_first_matching_pattern_wins() -> None:
    counts = layer_keep_counts("custom", CUSTOM, 0.3, layer_sparsity={"layer1.*": 0.75, "*": 0.5})
    assert counts == {"conv1.weight": 54, "layer1.0.conv1.weight": 36, "linear.weight": 20}


def test_custom_errors() -> None:
    with pytest.raises(ValueError, match=r"covers no pattern for layers \['conv1.weight', 'linear.weight'\]"):
        layer_keep_counts("custom", CUSTOM, None, layer_sparsity={"layer1.*": 0.5})
    with pytest.raises(ValueError, match=r"patterns \['fc'\] match no layer"):
        layer_keep_counts("custom", CUSTOM, None, layer_sparsity={"fc": 0.5, "*": 0.5})
    with pytest.raises(ValueError, match=r"layer_sparsity\['\*'\] must be in \[0, 1\), got 1.0"):
        layer_keep_counts("custom", CUSTOM, None, layer_sparsity={"*": 1.0})
    with pytest.raises(ValueError, match="distribution 'custom' needs layer_sparsity"):
        layer_keep_counts("custom", CUSTOM, None)
    with pytest.raises(ValueError, match="layer_sparsity applies only to distribution 'custom'"):
        layer_keep_counts("uniform", CUSTOM, 0.5, layer_sparsity={"*": 0.5})


# errors


def test_target_sparsity_range() -> None:
    for bad in (1.0, -0.1, None, float("nan")):
        with pytest.raises(ValueError) as error:
            layer_keep_counts("uniform", CUSTOM, bad)
        assert str(error.value) == f"target_sparsity must be in [0, 1), got {bad}."


def test_unknown_distribution() -> None:
    with pytest.raises(ValueError) as error:
        layer_keep_counts("x", CUSTOM, 0.5)
    assert str(error.value) == (
        "unknown distribution 'x'; known distributions: custom, er, erk, erk_plus, uniform, uniform_plus"
    )


def test_empty_shapes_and_zero_size_layers() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        layer_keep_counts("uniform", {}, 0.5)
    with pytest.raises(ValueError, match=r"layers \['e'\] have no weights"):
        layer_keep_counts("uniform", _shapes(e=(0, 3), w=(2, 2)), 0.5)


# exact budget on ResNet18


@pytest.mark.parametrize("distribution", ["uniform", "uniform_plus", "er", "erk", "erk_plus"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999])
def test_resnet18_budget_is_exact(distribution: str, sparsity: float) -> None:
    counts = layer_keep_counts(distribution, RESNET18, sparsity)
    assert list(counts) == list(RESNET18)
    assert sum(counts.values()) == round((1 - sparsity) * 11_164_352)
    for name, shape in RESNET18.items():
        assert 0 <= counts[name] <= math.prod(shape)
    if distribution == "uniform_plus":
        assert counts["conv1.weight"] == 1728
        assert counts["linear.weight"] >= 0.2 * 5120 - 1
    if distribution == "erk_plus":
        assert counts["linear.weight"] == 5120


def test_resnet18_erk_densities_follow_the_raw_ratio() -> None:
    # Away from the dense cap, density / raw is the same eps for every layer (up to one weight of rounding).
    counts = layer_keep_counts("erk", RESNET18, 0.99)
    ratios = [counts[name] / math.prod(shape) / (sum(shape) / math.prod(shape)) for name, shape in RESNET18.items()]
    sparse_ratios = [
        ratio for ratio, (name, shape) in zip(ratios, RESNET18.items(), strict=True) if counts[name] < math.prod(shape)
    ]
    assert max(sparse_ratios) - min(sparse_ratios) < 0.01 * max(sparse_ratios)
