"""Sparsity schedules: when to update masks and to what sparsity.

Modelled on jaxpruner's ``sparsity_schedules.py``: each schedule is a frozen dataclass, validated in
``__post_init__``, with two methods (what the sparsity or drop fraction is at a step, and whether that
step updates the masks). Schedules are plain data, so configs express them without code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_ROUNDS_TOLERANCE = 1e-9


def _check_range(
    owner: str,
    field: str,
    value: float,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = True,
) -> None:
    above_low = value > low if low_open else value >= low
    below_high = value < high if high_open else value <= high
    if not (above_low and below_high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{owner}.{field} must be in {interval}, got {value}.")


def _check_int(owner: str, field: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{field} must be an integer >= {minimum}, got {value!r}.")


def _rounds_to_reach(target_sparsity: float, prune_fraction: float) -> int:
    # The tolerance keeps e.g. 20% per round to 36% at 2 rounds despite float error in the logs.
    exact = math.log(1.0 - target_sparsity) / math.log(1.0 - prune_fraction)
    return max(1, math.ceil(exact - _ROUNDS_TOLERANCE))


@dataclass(frozen=True)
class OneShot:
    """Prune once, to ``target_sparsity``, at ``update_step``.

    Args:
        target_sparsity: Sparsity after the update, in ``[0, 1)``.
        update_step: The step (or round) at which masks are updated.

    Raises:
        ValueError: If a field is out of range.
    """

    target_sparsity: float
    update_step: int = 0

    def __post_init__(self) -> None:
        _check_range("OneShot", "target_sparsity", self.target_sparsity, 0.0, 1.0)
        _check_int("OneShot", "update_step", self.update_step, 0)

    def sparsity_at(self, step: int) -> float:
        """0 before ``update_step``, ``target_sparsity`` from it on."""
        return self.target_sparsity if step >= self.update_step else 0.0

    def is_update_step(self, step: int) -> bool:
        """Whether ``step`` is ``update_step``."""
        return step == self.update_step


@dataclass(frozen=True)
class Iterative:
    """``rounds`` rounds, each pruning ``prune_fraction`` of the weights that remain.

    Iterative magnitude pruning as in Frankle & Carbin 2019, "The Lottery Ticket Hypothesis"
    (https://arxiv.org/abs/1803.03635): after ``r`` rounds the sparsity is ``1 - (1 - f) ** r``. With
    ``target_sparsity`` set (see :meth:`to_target`), the last round lands exactly on the target.

    Args:
        prune_fraction: Fraction of the remaining weights pruned per round, in ``(0, 1)``.
        rounds: Number of pruning rounds, at least 1.
        target_sparsity: Optional cap, in ``(0, 1)``; ``rounds`` must then be exactly the number of rounds
            needed to reach it.

    Raises:
        ValueError: If a field is out of range, or ``rounds`` does not match ``target_sparsity``.
    """

    prune_fraction: float
    rounds: int
    target_sparsity: float | None = None

    def __post_init__(self) -> None:
        _check_range("Iterative", "prune_fraction", self.prune_fraction, 0.0, 1.0, low_open=True)
        _check_int("Iterative", "rounds", self.rounds, 1)
        if self.target_sparsity is not None:
            _check_range("Iterative", "target_sparsity", self.target_sparsity, 0.0, 1.0, low_open=True)
            needed = _rounds_to_reach(self.target_sparsity, self.prune_fraction)
            if self.rounds != needed:
                raise ValueError(
                    f"Iterative.rounds must be {needed} to reach target_sparsity {self.target_sparsity} at "
                    f"prune_fraction {self.prune_fraction}, got {self.rounds}."
                )

    @classmethod
    def to_target(cls, target_sparsity: float, prune_fraction: float) -> Iterative:
        """The fewest rounds of ``prune_fraction`` that reach ``target_sparsity``, the last one capped.

        ``rounds = ceil(log(1 - target_sparsity) / log(1 - prune_fraction))``, as in one-shot versus
        iterative comparisons at equal final sparsity.

        Args:
            target_sparsity: Final sparsity, in ``(0, 1)``.
            prune_fraction: Fraction of the remaining weights pruned per round, in ``(0, 1)``.

        Raises:
            ValueError: If an argument is out of range.
        """
        _check_range("Iterative", "target_sparsity", target_sparsity, 0.0, 1.0, low_open=True)
        _check_range("Iterative", "prune_fraction", prune_fraction, 0.0, 1.0, low_open=True)
        return cls(
            prune_fraction=prune_fraction,
            rounds=_rounds_to_reach(target_sparsity, prune_fraction),
            target_sparsity=target_sparsity,
        )

    def sparsity_at(self, round_index: int) -> float:
        """Sparsity after ``round_index`` rounds: ``1 - (1 - f) ** min(round, rounds)``, capped at the target."""
        completed = min(max(round_index, 0), self.rounds)
        sparsity = 1.0 - (1.0 - self.prune_fraction) ** completed
        if self.target_sparsity is not None:
            sparsity = min(sparsity, self.target_sparsity)
        return sparsity

    def is_update_step(self, round_index: int) -> bool:
        """Whether masks are pruned at ``round_index`` (rounds are numbered 1 to ``rounds``)."""
        return 1 <= round_index <= self.rounds


@dataclass(frozen=True)
class Polynomial:
    """Gradual pruning: sparsity rises from initial to final along a polynomial between two steps.

    From Zhu & Gupta 2017, "To prune, or not to prune" (https://arxiv.org/abs/1710.01878):
    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** power`` for ``t0 <= t <= t_end``, with
    ``s_i`` before ``t0`` and ``s_f`` after ``t_end``. Masks are updated every ``frequency`` steps from
    ``begin_step`` to ``end_step``.

    Args:
        initial_sparsity: Sparsity at ``begin_step``, in ``[0, 1)``.
        final_sparsity: Sparsity from ``end_step`` on, in ``[initial_sparsity, 1)``.
        begin_step: First update step, at least 0.
        end_step: Last update step, greater than ``begin_step``.
        frequency: Steps between updates; ``end_step - begin_step`` must be a multiple of it so that the
            last update lands on ``final_sparsity``.
        power: Exponent of the polynomial, greater than 0 (3 in the paper).

    Raises:
        ValueError: If a field is out of range.
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    power: float = 3

    def __post_init__(self) -> None:
        _check_range("Polynomial", "initial_sparsity", self.initial_sparsity, 0.0, 1.0)
        _check_range("Polynomial", "final_sparsity", self.final_sparsity, self.initial_sparsity, 1.0)
        _check_int("Polynomial", "begin_step", self.begin_step, 0)
        _check_int("Polynomial", "end_step", self.end_step, self.begin_step + 1)
        _check_int("Polynomial", "frequency", self.frequency, 1)
        if (self.end_step - self.begin_step) % self.frequency != 0:
            raise ValueError(
                f"Polynomial.frequency must divide end_step - begin_step = {self.end_step - self.begin_step} "
                f"so the last update lands on final_sparsity, got {self.frequency}."
            )
        if not self.power > 0:
            raise ValueError(f"Polynomial.power must be > 0, got {self.power}.")

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at ``step``, clamped to ``initial_sparsity`` / ``final_sparsity`` outside."""
        if step <= self.begin_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power

    def is_update_step(self, step: int) -> bool:
        """Whether ``step`` is in ``[begin_step, end_step]`` and a multiple of ``frequency`` from ``begin_step``."""
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0


@dataclass(frozen=True, kw_only=True)
class CosineDecay:
    """Cosine-decayed drop fraction for prune-and-regrow methods.

    From Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners" (RigL,
    https://arxiv.org/abs/1911.11134): ``alpha / 2 * (1 + cos(pi * step / end_step))`` of the kept weights
    are dropped and regrown every ``update_interval`` steps until ``end_step``. Keyword-only, because
    ``alpha`` has a default and ``end_step`` does not.

    Args:
        alpha: Initial drop fraction, in ``(0, 1]``.
        end_step: Step after which masks stop changing, at least 1.
        update_interval: Steps between mask updates, at least 1.

    Raises:
        ValueError: If a field is out of range.
    """

    alpha: float = 0.3
    end_step: int
    update_interval: int = 100

    def __post_init__(self) -> None:
        _check_range("CosineDecay", "alpha", self.alpha, 0.0, 1.0, low_open=True, high_open=False)
        _check_int("CosineDecay", "end_step", self.end_step, 1)
        _check_int("CosineDecay", "update_interval", self.update_interval, 1)

    def fraction_at(self, step: int) -> float:
        """Drop fraction at ``step``: ``alpha / 2 * (1 + cos(pi * step / end_step))``, 0 from ``end_step`` on."""
        if step >= self.end_step:
            return 0.0
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * step / self.end_step))

    def is_update_step(self, step: int) -> bool:
        """Whether ``0 < step < end_step`` and ``step`` is a multiple of ``update_interval``."""
        return 0 < step < self.end_step and step % self.update_interval == 0
