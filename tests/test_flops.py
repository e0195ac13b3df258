"""FLOP counting (analysis.flops): hand-computed layers, the full ResNet18, sparse and training FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.flops import (
    FlopCount,
    layer_flops,
    sparse_forward_flops,
)
from lit_modules.classifier import ResNet18Classifier
from lit_modules.resnet import ResNet18
from pruning_callbacks.engine.parameters import prunable_parameters

# Two FLOPs per multiply-add: in_channels * out_channels * kernel area * output pixels.
CONV_3_TO_8_ON_32 = 2 * 3 * 8 * 9 * 32 * 32


def test_conv_flops_hand_computed() -> None:
    count = layer_flops(nn.Conv2d(3, 8, 3, padding=1))
    assert count == FlopCount(total=CONV_3_TO_8_ON_32, per_weight={"weight": CONV_3_TO_8_ON_32})
    assert CONV_3_TO_8_ON_32 == 442_368


def test_flops_are_per_image_whatever_the_batch() -> None:
    assert layer_flops(nn.Conv2d(3, 8, 3, padding=1), (4, 3, 32, 32)).total == CONV_3_TO_8_ON_32


def test_strided_conv_and_linear_hand_computed() -> None:
    assert layer_flops(nn.Conv2d(3, 8, 3, stride=2, padding=1)).total == 2 * 3 * 8 * 9 * 16 * 16
    # The bias addition is not counted: only the matrix product, 2 * in * out.
    assert layer_flops(nn.Linear(10, 5), (2, 10)) == FlopCount(total=100, per_weight={"weight": 100})


def test_per_weight_names_of_a_two_layer_model() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    count = layer_flops(model)
    linear = 2 * 8 * 32 * 32 * 10
    assert count.per_weight == {"0.weight": CONV_3_TO_8_ON_32, "3.weight": linear}
    assert count.total == CONV_3_TO_8_ON_32 + linear
    assert set(count.per_weight) <= {name for name, _ in model.named_parameters()}


def test_a_tied_weight_is_counted_under_its_first_name() -> None:
    first, second = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    second.weight = first.weight
    count = layer_flops(nn.Sequential(first, second), (1, 4))
    assert count.per_weight == {"0.weight": 64}
    assert count.total == 64


def test_full_resnet18() -> None:
    model = ResNet18()
    count = layer_flops(model)
    # 0.555 G multiply-adds per 32x32 image, measured (conv and linear only; BN/ReLU/adds are not counted).
    assert count.total == 1_110_845_440
    assert list(count.per_weight) == list(prunable_parameters(model))
    assert len(count.per_weight) == 21
    assert sum(count.per_weight.values()) == count.total
    assert count.per_weight["conv1.weight"] == 2 * 3 * 64 * 9 * 32 * 32
    assert count.per_weight["layer2.0.shortcut.0.weight"] == 2 * 64 * 128 * 16 * 16
    assert count.per_weight["linear.weight"] == 2 * 512 * 10


def test_lightning_module_counts_like_the_plain_network_and_keeps_its_modes() -> None:
    module = ResNet18Classifier(width=8)
    module.train()
    module.bn1.eval()  # a deliberately mixed state must come back as it was
    running_mean = module.bn1.running_mean.clone()
    count = layer_flops(module)
    assert count == layer_flops(ResNet18(width=8))
    assert module.training and module.layer1.training and not module.bn1.training
    assert torch.equal(module.bn1.running_mean, running_mean)


def test_bad_input_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        layer_flops(nn.Linear(2, 2), (0, 2))


def test_sparse_forward_flops_hand_case() -> None:
    count = FlopCount(total=1000, per_weight={"a.weight": 600, "b.weight": 300})
    assert sparse_forward_flops(count, {}) == 1000
    assert sparse_forward_flops(count, {"a.weight": 0.25}) == 1000 - 0.75 * 600
    assert sparse_forward_flops(count, {"a.weight": 0.25, "b.weight": 0.5}) == 1000 - 450 - 150
    assert sparse_forward_flops(count, {"a.weight": 0.0, "b.weight": 0.0}) == 100


def test_sparse_forward_flops_rejects_unknown_layers_and_bad_densities() -> None:
    count = FlopCount(total=10, per_weight={"a.weight": 10})
    with pytest.raises(ValueError, match=r"no FLOPs counted for 'b\.weight'"):
        sparse_forward_flops(count, {"b.weight": 0.5})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sparse_forward_flops(count, {"a.weight": 1.5})


def test_training_flops_hand_cases() -> None:
    from pruning_callbacks import RigL, StaticSparse

    assert StaticSparse(target_sparsity=0.9).training_flops_per_sample(100.0, 1000.0, step=0) == 300.0
    rigl = RigL(target_sparsity=0.9, update_every=4)
    rigl.end_step = 50
    # Before T_end: (3 * 100 * 4 + 2 * 100 + 1000) / (4 + 1); after it, static sparse.
    assert rigl.training_flops_per_sample(100.0, 1000.0, step=10) == 480.0
    assert rigl.training_flops_per_sample(100.0, 1000.0, step=50) == 300.0
