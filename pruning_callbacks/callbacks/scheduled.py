"""Pruning on a sparsity schedule during training: gradual magnitude pruning (GMP), gradual and one-shot pruning.

Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for model compression"
(https://arxiv.org/abs/1710.01878): from step ``t0`` the sparsity rises along
``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3`` and every ``Δt`` steps the lowest-magnitude weights are
masked to the current ``s_t``, until ``t0 + n Δt``; training goes on at the final sparsity. As in jaxpruner, the
method is data: a score (``magnitude`` for GMP), a schedule (:class:`~pruning_callbacks.engine.schedules.Polynomial`)
and a distribution (``uniform``: every layer at ``s_t``, as the paper's TensorFlow ``model_pruning`` library does per
weight tensor). ``begin`` and ``end`` are fractions of training, resolved once against the trainer's total
optimizer steps and kept in the checkpoint; ``begin == end`` prunes once, to the final sparsity, at that point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.engine.checks import check_number
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.schedules import Polynomial
from pruning_callbacks.engine.scores import ScoreContext, compute_scores, get_score, needs_batches
from pruning_callbacks.engine.seeding import derive_seed
from pruning_callbacks.engine.selection import check_pruning_request, prune_to_sparsity


class ScheduledPruning(MaskedTraining):
    """Raise the sparsity along a polynomial schedule while training (Zhu & Gupta 2017's gradual pruning).

    Every ``update_every`` optimizer steps from ``begin`` to ``end`` (fractions of the run's optimizer steps), the
    weights with the lowest ``score`` among those still kept are masked so that the sparsity is exactly the
    schedule's ``s_t`` (masks only shrink); the last update lands on ``final_sparsity``. Logged at each update:
    ``sparsity/global`` and the per-layer values. The resolved steps are in :meth:`state_dict`, so a resumed run
    follows the interrupted run's schedule.

    Args:
        final_sparsity: Sparsity from ``end`` on, in ``(0, 1)``.
        initial_sparsity: ``s_i``, the sparsity at ``begin`` (0 in the paper), in ``[0, final_sparsity]``.
        begin: Fraction of training at which pruning starts, in ``[0, 1)``.
        end: Fraction of training at which the final sparsity is reached, in ``[begin, 1]``; the last update is
            the latest update step at or before it, so the steps between updates stay ``update_every``.
        update_every: Optimizer steps between mask updates (``Δt``), at least 1.
        power: The polynomial's exponent (3 in the paper), greater than 0.
        score: A registered data-free score: ``magnitude`` (GMP) or ``random``.
        scope: ``layerwise`` (every layer at ``s_t``, the paper) or ``global`` (one ranking over all layers).
        distribution: Layer densities for ``scope: layerwise`` (``uniform``, ``erk``, ...).
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.

    Raises:
        ValueError: For a sparsity, fraction, period or power out of range, an unknown or data-dependent score, or
            an invalid scope or distribution; at the start of training, for an endless run or one too short for the
            schedule to leave step 0.
    """

    def __init__(
        self,
        final_sparsity: float,
        initial_sparsity: float = 0.0,
        begin: float = 0.0,
        end: float = 0.75,
        update_every: int = 100,
        power: float = 3.0,
        score: str = "magnitude",
        scope: str = "layerwise",
        distribution: str = "uniform",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        check_number("final_sparsity", final_sparsity, 0.0, 1.0, low_open=True, high_open=True)
        check_number("initial_sparsity", initial_sparsity, 0.0, final_sparsity)
        check_number("begin", begin, 0.0, 1.0, high_open=True)
        check_number("end", end, begin, 1.0)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be an integer >= 1, got {update_every!r}")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 < power < math.inf:
            raise ValueError(f"power must be a finite number > 0, got {power!r}")
        get_score(score)
        if needs_batches(score):
            raise ValueError(
                f"ScheduledPruning takes data-free scores (magnitude, random, ...); '{score}' reads batches"
            )
        check_pruning_request(final_sparsity, scope, distribution)
        self.final_sparsity = float(final_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.begin = float(begin)
        self.end = float(end)
        self.update_every = update_every
        self.power = float(power)
        self.score = score
        self.scope = scope
        self.distribution = distribution
        self.schedule: Polynomial | None = None
        self.steps: tuple[int, int] | None = None
        """The resolved ``(begin_step, end_step)``; from the checkpoint on resume."""
        self.last_update_step: int | None = None

    # ------------------------------------------------------------------ what the method decides
    def sparsity_at(self, step: int) -> float:
        """The schedule's sparsity at optimizer step ``step`` (after :meth:`on_train_start` resolved it)."""
        assert self.steps is not None
        if self.steps[0] == self.steps[1]:  # one-shot
            return self.final_sparsity if step >= self.steps[0] else self.initial_sparsity
        assert self.schedule is not None
        return self.schedule.sparsity_at(step)

    def is_update_step(self, step: int) -> bool:
        """Whether the masks change at optimizer step ``step``."""
        assert self.steps is not None
        if self.steps[0] == self.steps[1]:
            return step == self.steps[0]
        assert self.schedule is not None
        return self.schedule.is_update_step(step) and self.sparsity_at(step) > 0

    def next_masks(self, pl_module: LightningModule, step: int) -> Masks:
        """The masks at ``step``: the current ones pruned to the schedule's sparsity by ``score``."""
        assert self.masks is not None
        context = ScoreContext(
            params=self.parameters, masks=self.masks, seed=derive_seed(self.seed, "scheduled", step), module=pl_module
        )
        scores = compute_scores(self.score, context)
        return prune_to_sparsity(
            scores, self.masks, self.sparsity_at(step), scope=self.scope, distribution=self.distribution
        )

    def summary_info(self) -> dict[str, Any]:
        """The resolved schedule, for ``summary.json``."""
        return {
            "begin_step": None if self.steps is None else self.steps[0],
            "end_step": None if self.steps is None else self.steps[1],
            "last_update_step": self.last_update_step,
        }

    # ------------------------------------------------------------------ hooks
    @override
    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        return Masks.dense(self.parameters)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Built here, not in on_fit_start: estimated_stepping_batches reads the train dataloader, which the fit loop
        # has set up at the resumed epoch by now (see DynamicSparseTraining.on_train_start).
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("ScheduledPruning needs a run of known length: set trainer.max_epochs or max_steps")
        if self.steps is None:
            begin = math.floor(self.begin * total)
            updates = math.floor((self.end * total - begin) / self.update_every)
            self.steps = (begin, begin + updates * self.update_every)
        begin, end = self.steps
        if begin != end:
            self.schedule = Polynomial(
                self.initial_sparsity, self.final_sparsity, begin, end, self.update_every, self.power
            )
        elif self.end > self.begin:
            raise ValueError(
                f"ScheduledPruning: the run's {total} optimizer steps leave no update of every {self.update_every} "
                f"steps between begin {self.begin} and end {self.end}; lower update_every or train longer"
            )
        steps = [begin] if begin == end else range(begin, end + 1, self.update_every)
        count = sum(1 for step in steps if self.sparsity_at(step) > 0)
        rank_zero_info(
            f"{type(self).__name__}: {self.score} pruning to {self.final_sparsity:.4f} in {count} updates from step "
            f"{begin} to step {end} of {total} (every {self.update_every}, power {self.power:g})"
        )

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if self.steps is None or not self.is_update_step(step) or self.last_update_step == step:
            return
        self.set_masks(trainer, pl_module, self.next_masks(pl_module, step))
        self.last_update_step = step

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(steps=None if self.steps is None else list(self.steps), last_update_step=self.last_update_step)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        steps = state_dict.get("steps")
        self.steps = None if steps is None else (int(steps[0]), int(steps[1]))
        last = state_dict.get("last_update_step")
        self.last_update_step = None if last is None else int(last)
