"""Sparsity schedules: when to update masks and to what sparsity.

Modelled on jaxpruner's ``sparsity_schedules.py``: each schedule is a frozen dataclass, validated in
``__post_init__``, with two methods (what the sparsity or drop fraction is at a step, and whether that
step updates the masks). Schedules are plain data, so configs express them without code.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pruning_callbacks.engine.checks import check_int, check_number, renamed_fields

_ROUNDS_TOLERANCE = 1e-9


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
        check_number("OneShot.target_sparsity", self.target_sparsity, 0.0, 1.0, high_open=True)
        check_int("OneShot.update_step", self.update_step, 0)

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
        check_number("Iterative.prune_fraction", self.prune_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_int("Iterative.rounds", self.rounds, 1)
        if self.target_sparsity is not None:
            check_number("Iterative.target_sparsity", self.target_sparsity, 0.0, 1.0, low_open=True, high_open=True)
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
        check_number("Iterative.target_sparsity", target_sparsity, 0.0, 1.0, low_open=True, high_open=True)
        check_number("Iterative.prune_fraction", prune_fraction, 0.0, 1.0, low_open=True, high_open=True)
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
    ``s_i`` before ``t0`` and ``s_f`` after ``t_end``. Masks are updated every ``update_every`` steps from
    ``begin_step`` to ``end_step``.

    Args:
        initial_sparsity: Sparsity at ``begin_step``, in ``[0, 1)``.
        final_sparsity: Sparsity from ``end_step`` on, in ``[initial_sparsity, 1)``.
        begin_step: First update step, at least 0.
        end_step: Last update step, greater than ``begin_step``.
        update_every: Steps between updates; ``end_step - begin_step`` must be a multiple of it so that the
            last update lands on ``final_sparsity``.
        power: Exponent of the polynomial, greater than 0 (3 in the paper).

    Raises:
        ValueError: If a field is out of range.
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    update_every: int
    power: float = 3

    def __post_init__(self) -> None:
        check_number("Polynomial.initial_sparsity", self.initial_sparsity, 0.0, 1.0, high_open=True)
        check_number("Polynomial.final_sparsity", self.final_sparsity, self.initial_sparsity, 1.0, high_open=True)
        check_int("Polynomial.begin_step", self.begin_step, 0)
        check_int("Polynomial.end_step", self.end_step, self.begin_step + 1)
        check_int("Polynomial.update_every", self.update_every, 1)
        if (self.end_step - self.begin_step) % self.update_every != 0:
            raise ValueError(
                f"Polynomial.update_every must divide end_step - begin_step = {self.end_step - self.begin_step} "
                f"so the last update lands on final_sparsity, got {self.update_every}."
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
        """Whether ``step`` is in ``[begin_step, end_step]`` and a multiple of ``update_every`` from ``begin_step``."""
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.update_every == 0


@dataclass(frozen=True, kw_only=True)
class CosineDecay:
    """Cosine-decayed drop fraction for prune-and-regrow methods.

    From Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners" (RigL,
    https://arxiv.org/abs/1911.11134): ``alpha / 2 * (1 + cos(pi * step / end_step))`` of the kept weights
    are dropped and regrown every ``update_every`` steps until ``end_step``. Keyword-only, because
    ``alpha`` has a default and ``end_step`` does not.

    Args:
        alpha: Initial drop fraction, in ``(0, 1]``.
        end_step: Step after which masks stop changing, at least 1.
        update_every: Steps between mask updates, at least 1.

    Raises:
        ValueError: If a field is out of range.
    """

    alpha: float = 0.3
    end_step: int
    update_every: int = 100

    def __post_init__(self) -> None:
        check_number("CosineDecay.alpha", self.alpha, 0.0, 1.0, low_open=True)
        check_int("CosineDecay.end_step", self.end_step, 1)
        check_int("CosineDecay.update_every", self.update_every, 1)

    def fraction_at(self, step: int) -> float:
        """Drop fraction at ``step``: ``alpha / 2 * (1 + cos(pi * step / end_step))``, 0 from ``end_step`` on."""
        if step >= self.end_step:
            return 0.0
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * step / self.end_step))

    def is_update_step(self, step: int) -> bool:
        """Whether ``0 < step < end_step`` and ``step`` is a multiple of ``update_every``."""
        return 0 < step < self.end_step and step % self.update_every == 0


def cosine_update_problem(
    owner: str, update_every: int, t_end: float, end_step: int, steps: str, relation: str = "="
) -> tuple[str, str] | None:
    """What is wrong with a prune-and-regrow schedule that never updates the masks (``update_every >= T_end``).

    Args:
        owner: The method's name, first in the message.
        update_every: Steps between updates.
        t_end: Fraction of the training steps after which the masks stop changing.
        end_step: ``T_end`` in steps (or its upper bound, with ``relation`` ``<=``).
        steps: What ``T_end`` was computed from, e.g. ``"the run's 6 optimizer steps"``.
        relation: ``=`` for ``T_end`` itself, ``<=`` for a bound.

    Returns:
        ``None`` when at least one update happens; otherwise the problem and its fix, each as a phrase.
    """
    if update_every < end_step:
        return None
    fix = (
        f"set --trainer.callbacks.update_every to at most {end_step - 1}, or train for more steps"
        if end_step > 1
        else "train for more steps (trainer.max_epochs or trainer.max_steps)"
    )
    return (
        f"{owner}: update_every {update_every} is not shorter than T_end {relation} {end_step} steps "
        f"(t_end {t_end} × {steps}), so the masks would never change",
        fix,
    )


RESETS = ("rewind", "finetune", "reinit")
"""How a round after the first starts: rewind the weights, keep them (fine-tune), or draw them afresh."""


@dataclass(frozen=True)
class RoundPlan:
    """Where each round's epochs lie in the single ``fit``.

    Attributes:
        starts: First epoch of each round; round 0 may be empty (when training starts from a dense checkpoint).
        total_epochs: Epochs of the whole run.
    """

    starts: tuple[int, ...]
    total_epochs: int

    @classmethod
    def from_lengths(cls, lengths: Sequence[int]) -> RoundPlan:
        """Build the plan from the number of epochs of each round."""
        starts = [0]
        for length in lengths[:-1]:
            starts.append(starts[-1] + length)
        return cls(tuple(starts), sum(lengths))

    @classmethod
    def for_reset(
        cls,
        rounds: int,
        epochs_per_round: int,
        reset: str,
        rewind_epoch: int = 0,
        finetune_epochs: int | None = None,
        from_trained: bool = False,
    ) -> RoundPlan:
        """The plan of a prune-after-training run: round 0, then ``rounds`` rounds after a reset.

        Round 0 trains ``epochs_per_round`` epochs (none ``from_trained`` weights). Each later round trains
        ``finetune_epochs`` if given, else ``epochs_per_round - rewind_epoch`` after rewinding (so that it ends where
        round 0 ended) and ``epochs_per_round`` after ``finetune`` or ``reinit``.

        Raises:
            ValueError: For an unknown reset, a rewind point outside round 0, rewinding from trained weights, or a
                non-positive number of epochs.
        """
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {', '.join(RESETS)}, got {reset!r}")
        if epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be a positive integer, got {epochs_per_round}")
        if reset == "rewind" and not 0 <= rewind_epoch < epochs_per_round:
            raise ValueError(
                f"rewind_epoch must be in [0, epochs_per_round) = [0, {epochs_per_round}), got {rewind_epoch}: "
                "the rewind point has to lie inside the first round"
            )
        if reset != "rewind" and rewind_epoch != 0:
            raise ValueError(
                f"rewind_epoch {rewind_epoch} applies to reset: rewind only, got reset: {reset}; drop rewind_epoch"
            )
        if from_trained and reset == "rewind":
            raise ValueError(
                "dense_checkpoint starts from trained weights, so there is no early point to rewind to; "
                "use reset: finetune with dense_checkpoint"
            )
        if finetune_epochs is not None and finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be a positive integer or null, got {finetune_epochs}")
        later = finetune_epochs or (epochs_per_round - rewind_epoch if reset == "rewind" else epochs_per_round)
        first = 0 if from_trained else epochs_per_round
        return cls.from_lengths([first] + [later] * rounds)

    def round_of(self, epoch: int) -> int:
        """Index of the round that ``epoch`` belongs to."""
        return bisect.bisect_right(self.starts, epoch) - 1

    def last_epoch(self, round_index: int) -> int:
        """Last epoch of round ``round_index`` (one before its start for an empty round)."""
        ends = (*self.starts[1:], self.total_epochs)
        return ends[round_index] - 1


def iterative_schedule(rounds: int | None, prune_fraction: float | None, target_sparsity: float | None) -> Iterative:
    """The round schedule that a prune-after-training config asks for.

    * ``rounds`` and ``prune_fraction``: each round removes ``prune_fraction`` of the remaining weights;
    * ``target_sparsity`` and ``prune_fraction``: as many such rounds as reach the target, the last landing on it;
    * ``target_sparsity`` alone: one round straight to it (one-shot).

    Raises:
        ValueError: For an out-of-range value, or a combination other than these three.
    """
    if prune_fraction is not None and not 0 < prune_fraction < 1:
        raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    if target_sparsity is not None and not 0 < target_sparsity < 1:
        raise ValueError(f"target_sparsity must be in (0, 1), got {target_sparsity}")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds}")
    if target_sparsity is None:
        if rounds is None or prune_fraction is None:
            raise ValueError(
                "give rounds and prune_fraction (iterative by fraction), target_sparsity and prune_fraction "
                "(iterative to a target) or target_sparsity alone (one-shot)"
            )
        return Iterative(prune_fraction=prune_fraction, rounds=rounds)
    if rounds is not None:
        raise ValueError(
            f"rounds ({rounds}) and target_sparsity ({target_sparsity}) conflict: with target_sparsity the number "
            "of rounds follows from prune_fraction (iterative) or is 1 (one-shot); drop rounds"
        )
    if prune_fraction is None:
        return Iterative(prune_fraction=target_sparsity, rounds=1)
    return Iterative.to_target(target_sparsity, prune_fraction)


# The names of the release before: the update period was ``frequency`` (Polynomial) and ``update_interval``
# (CosineDecay); it is ``update_every`` everywhere now, as in ScheduledPruning and the dynamic callbacks.
renamed_fields(Polynomial, frequency="update_every")
renamed_fields(CosineDecay, update_interval="update_every")
