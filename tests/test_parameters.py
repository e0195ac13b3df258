"""Unit tests for resolving the prunable parameter set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_callbacks.engine.parameters import parameter_shapes, prunable_parameters


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, bias=True)
        self.bn1 = nn.BatchNorm2d(4)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.norm = nn.LayerNorm(4)
        self.linear = nn.Linear(4, 10)


def test_default_set_is_conv_and_linear_weights_in_module_order() -> None:
    model = Tiny()
    params = prunable_parameters(model)
    assert list(params) == ["conv1.weight", "block.0.weight", "linear.weight"]
    assert params["conv1.weight"] is model.conv1.weight
    assert params["linear.weight"] is model.linear.weight


def test_exclude_by_module_name() -> None:
    params = prunable_parameters(Tiny(), exclude=["conv1", "linear"])
    assert list(params) == ["block.0.weight"]


def test_include_and_exclude_by_glob() -> None:
    assert list(prunable_parameters(Tiny(), include=["block.*"])) == ["block.0.weight"]
    assert list(prunable_parameters(Tiny(), include=["*.weight"], exclude=["lin*"])) == [
        "conv1.weight",
        "block.0.weight",
    ]
    # Full parameter names match too.
    assert list(prunable_parameters(Tiny(), exclude=["linear.weight"])) == ["conv1.weight", "block.0.weight"]


def test_pattern_matching_nothing_names_the_candidates() -> None:
    with pytest.raises(ValueError) as error:
        prunable_parameters(Tiny(), exclude=["foo"])
    assert str(error.value) == (
        "exclude pattern 'foo' matches no prunable parameter; "
        "prunable parameters: conv1.weight, block.0.weight, linear.weight (3 in all)"
    )
    with pytest.raises(ValueError, match=r"^include pattern 'bn1' matches no prunable parameter"):
        prunable_parameters(Tiny(), include=["bn1"])


def test_long_candidate_list_is_capped() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    with pytest.raises(ValueError) as error:
        prunable_parameters(model, exclude=["nothing"])
    assert str(error.value).endswith(
        "prunable parameters: 0.weight, 1.weight, 2.weight, 3.weight, 4.weight, 5.weight, 6.weight, 7.weight, "
        "... (10 in all)"
    )


def test_empty_result_is_an_error() -> None:
    with pytest.raises(ValueError, match="no prunable parameter is left"):
        prunable_parameters(Tiny(), exclude=["*"])


def test_single_string_pattern_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"exclude must be a list of patterns, got the string 'conv1'"):
        prunable_parameters(Tiny(), exclude="conv1")  # type: ignore[arg-type]


def test_model_without_candidates_is_an_error() -> None:
    with pytest.raises(ValueError, match="no convolution or linear weight"):
        prunable_parameters(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()))


def test_shared_weight_is_listed_once_and_bare_module_works() -> None:
    first = nn.Linear(3, 3)
    second = nn.Linear(3, 3)
    second.weight = first.weight
    assert list(prunable_parameters(nn.Sequential(first, second))) == ["0.weight"]
    assert list(prunable_parameters(nn.Conv1d(2, 2, 1))) == ["weight"]


def test_parameter_shapes() -> None:
    shapes = parameter_shapes(prunable_parameters(Tiny()))
    assert shapes == {
        "conv1.weight": torch.Size([4, 3, 3, 3]),
        "block.0.weight": torch.Size([4, 4, 3, 3]),
        "linear.weight": torch.Size([10, 4]),
    }
