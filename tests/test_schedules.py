"""Unit tests for sparsity schedules on hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pruning_callbacks.engine.schedules import CosineDecay, Iterative, OneShot, Polynomial, cosine_update_problem

# OneShot


def test_one_shot() -> None:
    schedule = OneShot(0.9, update_step=5)
    assert [schedule.sparsity_at(step) for step in (0, 4, 5, 100)] == [0.0, 0.0, 0.9, 0.9]
    assert [schedule.is_update_step(step) for step in (4, 5, 6)] == [False, True, False]
    assert OneShot(0.5).is_update_step(0)


def test_one_shot_validation() -> None:
    with pytest.raises(ValueError, match=r"^OneShot.target_sparsity must be in \[0, 1\), got 1.0.$"):
        OneShot(1.0)
    with pytest.raises(ValueError, match=r"^OneShot.update_step must be an integer >= 0, got -1.$"):
        OneShot(0.5, update_step=-1)


def test_schedules_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        OneShot(0.5).target_sparsity = 0.6  # type: ignore[misc]


# Iterative


def test_iterative() -> None:
    schedule = Iterative(prune_fraction=0.2, rounds=3)
    assert [schedule.sparsity_at(r) for r in range(5)] == pytest.approx([0.0, 0.2, 0.36, 0.488, 0.488])
    assert [schedule.is_update_step(r) for r in range(5)] == [False, True, True, True, False]


def test_iterative_to_target_lands_on_target() -> None:
    # log(0.1) / log(0.8) = 10.3 -> 11 rounds; round 10 is at 1 - 0.8**10 = 0.8926, round 11 exactly 0.9.
    schedule = Iterative.to_target(0.9, 0.2)
    assert schedule.rounds == 11
    assert schedule.sparsity_at(10) == pytest.approx(1 - 0.8**10)
    assert schedule.sparsity_at(11) == 0.9
    assert schedule.sparsity_at(50) == 0.9
    # Exact powers must not need an extra round despite float error in the logs: 0.36 = 1 - 0.8**2.
    assert Iterative.to_target(0.36, 0.2).rounds == 2
    assert Iterative.to_target(0.2, 0.2).rounds == 1
    assert Iterative.to_target(0.1, 0.2).rounds == 1
    assert Iterative.to_target(0.1, 0.2).sparsity_at(1) == 0.1


def test_iterative_validation() -> None:
    with pytest.raises(ValueError, match=r"^Iterative.prune_fraction must be in \(0, 1\), got 0.0.$"):
        Iterative(0.0, 3)
    with pytest.raises(ValueError, match=r"^Iterative.rounds must be an integer >= 1, got 0.$"):
        Iterative(0.2, 0)
    with pytest.raises(ValueError, match=r"^Iterative.rounds must be 11 to reach target_sparsity 0.9"):
        Iterative(0.2, 5, target_sparsity=0.9)
    with pytest.raises(ValueError, match=r"^Iterative.target_sparsity must be in \(0, 1\), got 1.0.$"):
        Iterative.to_target(1.0, 0.2)


# Polynomial


def test_polynomial_zhu_gupta() -> None:
    schedule = Polynomial(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=100, update_every=10)
    # s_t = 0.8 + (0 - 0.8) * (1 - t / 100) ** 3
    assert schedule.sparsity_at(0) == 0.0
    assert schedule.sparsity_at(25) == pytest.approx(0.8 - 0.8 * 0.75**3)  # 0.4625
    assert schedule.sparsity_at(50) == pytest.approx(0.7)
    assert schedule.sparsity_at(100) == 0.8
    assert schedule.sparsity_at(-5) == 0.0
    assert schedule.sparsity_at(500) == 0.8
    assert [schedule.is_update_step(t) for t in (0, 5, 10, 100, 110)] == [True, False, True, True, False]


def test_polynomial_offset_and_linear() -> None:
    schedule = Polynomial(0.5, 0.9, begin_step=100, end_step=200, update_every=25, power=1)
    assert schedule.sparsity_at(50) == 0.5
    assert schedule.sparsity_at(150) == pytest.approx(0.7)
    assert [schedule.is_update_step(t) for t in (75, 100, 125, 130, 200, 225)] == [
        False,
        True,
        True,
        False,
        True,
        False,
    ]


def test_polynomial_validation() -> None:
    with pytest.raises(ValueError, match=r"^Polynomial.final_sparsity must be in \[0.5, 1\), got 0.2.$"):
        Polynomial(0.5, 0.2, 0, 100, 10)
    with pytest.raises(ValueError, match=r"^Polynomial.end_step must be an integer >= 11, got 10.$"):
        Polynomial(0.0, 0.5, 10, 10, 1)
    with pytest.raises(ValueError, match=r"^Polynomial.update_every must divide end_step - begin_step = 100"):
        Polynomial(0.0, 0.5, 0, 100, 30)
    with pytest.raises(ValueError, match=r"^Polynomial.power must be > 0, got 0.$"):
        Polynomial(0.0, 0.5, 0, 100, 10, power=0)


# CosineDecay


def test_cosine_decay() -> None:
    schedule = CosineDecay(alpha=0.3, end_step=1000, update_every=100)
    assert schedule.fraction_at(0) == pytest.approx(0.3)
    assert schedule.fraction_at(250) == pytest.approx(0.15 * (1 + math.sqrt(0.5)))
    assert schedule.fraction_at(500) == pytest.approx(0.15)
    assert schedule.fraction_at(1000) == 0.0
    assert schedule.fraction_at(2000) == 0.0
    assert [schedule.is_update_step(t) for t in (0, 100, 150, 900, 1000, 1100)] == [
        False,
        True,
        False,
        True,
        False,
        False,
    ]
    assert CosineDecay(end_step=10).alpha == 0.3


def test_cosine_decay_validation() -> None:
    with pytest.raises(ValueError, match=r"^CosineDecay.alpha must be in \(0, 1\], got 1.5.$"):
        CosineDecay(alpha=1.5, end_step=100)
    with pytest.raises(ValueError, match=r"^CosineDecay.end_step must be an integer >= 1, got 0.$"):
        CosineDecay(end_step=0)
    with pytest.raises(ValueError, match=r"^CosineDecay.update_every must be an integer >= 1, got 0.$"):
        CosineDecay(end_step=10, update_every=0)
    with pytest.raises(TypeError):
        CosineDecay(0.3, 1000)  # type: ignore[misc]


def test_the_old_update_period_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="Polynomial.frequency is now called update_every"):
        old = Polynomial(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    assert old == Polynomial(0.0, 0.8, begin_step=0, end_step=100, update_every=10)
    with pytest.warns(DeprecationWarning, match="CosineDecay.update_interval is now called update_every"):
        assert CosineDecay(end_step=10, update_interval=5).update_every == 5
    with pytest.raises(ValueError, match="give update_every or its old name update_interval, not both"):
        CosineDecay(end_step=10, update_interval=5, update_every=5)


def test_cosine_update_problem_names_t_end_and_the_fix() -> None:
    assert cosine_update_problem("RigL", 3, 0.75, 4, "the run's 6 optimizer steps") is None
    problem, fix = cosine_update_problem("RigL", 100, 0.75, 4, "the run's 6 optimizer steps")
    assert problem == (
        "RigL: update_every 100 is not shorter than T_end = 4 steps (t_end 0.75 × the run's 6 optimizer steps), "
        "so the masks would never change"
    )
    assert fix == "set --trainer.callbacks.update_every to at most 3, or train for more steps"
    _, fix = cosine_update_problem("SET", 1, 0.75, 1, "trainer.max_steps 1", "<=")
    assert fix == "train for more steps (trainer.max_epochs or trainer.max_steps)"
