"""Unit tests for the score registry and the built-in scores."""

from __future__ import annotations

import pytest
import torch

from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import SCORES, ScoreContext, compute_scores, get_score, register_score


def _context(seed: int = 0, dtype: torch.dtype = torch.float32) -> ScoreContext:
    params = {
        "a.weight": torch.tensor([[-1.5, 0.0], [2.0, -0.25]], dtype=dtype),
        "b.weight": torch.tensor([3.0, -4.0, 0.5], dtype=dtype),
    }
    return ScoreContext(params=params, masks=Masks.dense(params), seed=seed)


def test_unknown_score_lists_known_names() -> None:
    with pytest.raises(ValueError) as error:
        get_score("x")
    assert str(error.value) == f"unknown score 'x'; known scores: {', '.join(sorted(SCORES))}"
    assert {"magnitude", "random", "snip", "grasp", "synflow"} <= set(SCORES)


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(ValueError, match="score 'magnitude' is already registered"):
        register_score("magnitude")


def test_register_and_compute_new_score(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pruning_callbacks.engine.scores.SCORES", dict(SCORES))

    @register_score("negated")
    def negated(context: ScoreContext) -> dict[str, torch.Tensor]:
        return {name: -p for name, p in context.params.items()}

    assert get_score("negated") is negated
    scores = compute_scores("negated", _context())
    assert scores["b.weight"].tolist() == [-3.0, 4.0, -0.5]


def test_magnitude_is_absolute_value_in_float32() -> None:
    scores = compute_scores("magnitude", _context(dtype=torch.float64))
    assert list(scores) == ["a.weight", "b.weight"]
    assert scores["a.weight"].dtype == torch.float32
    assert scores["a.weight"].tolist() == [[1.5, 0.0], [2.0, 0.25]]
    assert scores["b.weight"].tolist() == [3.0, 4.0, 0.5]


def test_random_is_reproducible_and_drawn_layer_by_layer() -> None:
    first = compute_scores("random", _context(seed=7))
    again = compute_scores("random", _context(seed=7))
    other = compute_scores("random", _context(seed=8))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["a.weight"], other["a.weight"])
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(first["a.weight"], torch.rand((2, 2), generator=generator))
    assert torch.equal(first["b.weight"], torch.rand((3,), generator=generator))
    assert all(((s >= 0) & (s < 1)).all() for s in first.values())


def test_random_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    compute_scores("random", _context(seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_compute_scores_validates_keys_and_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pruning_callbacks.engine.scores.SCORES", dict(SCORES))

    @register_score("missing_layer")
    def missing_layer(context: ScoreContext) -> dict[str, torch.Tensor]:
        return {"a.weight": context.params["a.weight"], "c.weight": torch.zeros(1)}

    @register_score("wrong_shape")
    def wrong_shape(context: ScoreContext) -> dict[str, torch.Tensor]:
        return {name: p.reshape(-1) for name, p in context.params.items()}

    with pytest.raises(ValueError, match=r"missing: \['b.weight'\], unexpected: \['c.weight'\]"):
        compute_scores("missing_layer", _context())
    with pytest.raises(ValueError, match=r"returned shape \(4,\) for 'a.weight', whose shape is \(2, 2\)"):
        compute_scores("wrong_shape", _context())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_random_scores_are_the_same_on_cuda() -> None:
    context = _context(seed=3)
    on_cuda = ScoreContext(
        params={name: p.cuda() for name, p in context.params.items()}, masks=context.masks.to("cuda"), seed=3
    )
    cpu_scores = compute_scores("random", context)
    cuda_scores = compute_scores("random", on_cuda)
    assert all(
        cuda_scores[name].is_cuda and torch.equal(cuda_scores[name].cpu(), cpu_scores[name]) for name in cpu_scores
    )
