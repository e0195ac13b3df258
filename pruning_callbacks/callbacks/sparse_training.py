"""Prune-and-regrow training at a constant per-layer budget: the schedule and the update that SET and RigL share.

Every ``update_every`` optimizer steps until ``t_end`` of training, each layer drops a cosine-decayed fraction of its
active weights by magnitude and grows as many connections by a grow score of the one registry. The drop-and-grow
maths is in :mod:`pruning_callbacks.engine.regrowth`; this callback only wires Lightning hooks to it.
:mod:`pruning_callbacks.callbacks.dynamic` holds the two methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from pruning_callbacks.callbacks.static import StaticSparse
from pruning_callbacks.engine.checks import check_int, check_number, optional_int, renamed
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.regrowth import RegrowthRecord, drop_and_grow, regrowth_record, zero_grown
from pruning_callbacks.engine.schedules import CosineDecay, cosine_update_problem
from pruning_callbacks.engine.scores import ScoreContext, compute_scores, get_score
from pruning_callbacks.engine.seeding import derive_seed

REGROWTH_STATE_VERSION = 1


class DynamicSparseTraining(StaticSparse):
    """Prune-and-regrow training at a constant per-layer budget; subclasses choose the grow score.

    Every ``update_every`` optimizer steps (``trainer.global_step``, so gradient accumulation counts real steps) before
    ``T_end = floor(t_end * trainer.estimated_stepping_batches)``, each layer drops the fraction
    ``f(t) = alpha / 2 * (1 + cos(pi * t / T_end))`` (:class:`~pruning_callbacks.engine.schedules.CosineDecay`) of its
    active weights with the smallest magnitude and activates as many connections that were inactive, those with the
    largest grow score (:data:`~pruning_callbacks.engine.scores.SCORES`). A connection dropped in an update is
    not regrown in the same update, so exactly that many connections move, and a layer never changes its count.

    The update runs in ``on_before_optimizer_step``: after backward, after AMP unscaling and after DDP reduced the
    gradients, so every rank computes the same masks (they are also broadcast from rank 0). The optimizer step of that
    batch still updates the surviving weights; the grown connections take no part in it (their gradient is zeroed) and
    so start the next step at exactly 0 with zero optimizer state (momentum, Adam moments), and the dropped weights and
    their state are zeroed by the base callback's mask applier. An update whose grow scores are not finite (a
    ``16-mixed`` step that the gradient scaler skips) is skipped with a warning.

    Logged at each update: ``regrowth/drop_fraction``, ``regrowth/changed`` and ``regrowth/changed/<layer>``,
    ``regrowth/grown_survival`` and ``regrowth/grown_survival/<layer>`` (the fraction of the previous update's grown
    connections still active). The schedule position is ``trainer.global_step``; ``T_end``, the update count and the
    last grown set are in :meth:`state_dict`, so a resumed run continues exactly. ``T_end`` is computed in
    ``on_train_start``, after Lightning restored the loop counters and set up the train dataloader at the resumed
    epoch (asking for ``estimated_stepping_batches`` earlier would build the dataloader before the restore, and a
    DataLoader with workers would then draw epoch 0's order on a resume).

    Args:
        target_sparsity: Fraction of the prunable weights removed, in ``[0, 1)``; constant through training.
        distribution: Layer-wise densities: ``uniform``, ``er`` or ``erk`` (the default).
        update_every: Optimizer steps between updates, an integer >= 1 (100 in the paper).
        alpha: Initial drop fraction, in ``(0, 1]`` (0.3 in the paper).
        t_end: Fraction of the training steps after which the masks stop changing, in ``(0, 1]`` (0.75 in the paper).
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`; also seeds random growth, per step.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`; the chart is drawn once, since per-layer
            densities do not change.
        delta_t: Deprecated name of ``update_every`` (the paper's ΔT), accepted for one release.

    Raises:
        ValueError: If an argument is outside its allowed values; at the start of ``fit``, if the run is endless or
            ``update_every >= T_end`` (no mask update would ever happen).
    """

    grow_score: ClassVar[str]
    """Name of the grow score in :data:`~pruning_callbacks.engine.scores.SCORES`."""

    def __init__(
        self,
        target_sparsity: float,
        distribution: str = "erk",
        update_every: int = 100,
        alpha: float = 0.3,
        t_end: float = 0.75,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
        delta_t: int | None = None,
    ) -> None:
        super().__init__(
            target_sparsity=target_sparsity,
            distribution=distribution,
            include=include,
            exclude=exclude,
            seed=seed,
            log_chart=log_chart,
        )
        update_every = renamed(type(self).__name__, "delta_t", "update_every", delta_t, update_every, 100)
        check_int("update_every", update_every, 1)
        self.update_every = update_every
        self.alpha = check_number("alpha", alpha, 0.0, 1.0, low_open=True)
        self.t_end = check_number("t_end", t_end, 0.0, 1.0, low_open=True)
        get_score(self.grow_score)
        self.schedule: CosineDecay | None = None
        self.end_step: int | None = None
        self.regrowth_updates = 0
        self.last_update: RegrowthRecord | None = None
        self._previous_grown: Masks | None = None

    # ------------------------------------------------------------------ hooks
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The schedule is not built here: it needs trainer.estimated_stepping_batches, which builds the train
        # dataloader and its first iterator, and on_fit_start runs before Lightning restores the loop counters of a
        # resumed run, so a DataLoader with workers would start drawing epoch 0's order. Only what is known without
        # data is checked now (an endless run, a max_steps too short for one update); on_train_start builds it.
        self._check_step_bounds(trainer)
        super().on_fit_start(trainer, pl_module)
        if self._previous_grown is not None:
            self._previous_grown = self._previous_grown.to(next(iter(self.parameters.values())).device)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The fit loop has restored its counters and set up the train dataloader by now (at the resumed epoch), so
        # estimated_stepping_batches reads that dataloader instead of building one early.
        self.schedule = self._build_schedule(trainer)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # The only per-step work: two integer comparisons, no host sync.
        step = trainer.global_step
        if self.schedule is None or not self.schedule.is_update_step(step):
            return
        if self.last_update is not None and self.last_update.step == step:
            return  # a second optimizer stepping at the same global step
        self._regrow(trainer, pl_module, step)

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["regrowth"] = {
            "version": REGROWTH_STATE_VERSION,
            "end_step": self.end_step,
            "updates": self.regrowth_updates,
            "last_update_step": self.last_update.step if self.last_update is not None else None,
            "previous_grown": self._previous_grown.state_dict() if self._previous_grown is not None else None,
        }
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        regrowth = state_dict.get("regrowth") or {}
        self.end_step = optional_int(regrowth.get("end_step"))
        self.regrowth_updates = int(regrowth.get("updates", 0))
        previous = regrowth.get("previous_grown")
        self._previous_grown = Masks.from_state_dict(previous) if previous is not None else None
        if self._previous_grown is not None and self.masks is not None:
            self._previous_grown.check_compatible({name: mask.shape for name, mask in self.masks.items()})

    # ------------------------------------------------------------------ internals
    def _endless_run(self) -> ValueError:
        return ValueError(
            f"{type(self).__name__} needs a finite number of training steps to place t_end; "
            "set trainer.max_epochs or trainer.max_steps."
        )

    def _check_updates(self, trainer: Trainer, end_step: int, steps: str, relation: str = "=") -> None:
        """Refuse a schedule without a single mask update (a ``fast_dev_run`` only gets a warning).

        Raises:
            ValueError: In one line, with ``update_every``, ``T_end`` (``relation`` ``<=`` for a bound) and the fix.
        """
        name = type(self).__name__
        problem = cosine_update_problem(name, self.update_every, self.t_end, end_step, steps, relation)
        if problem is not None and trainer.fast_dev_run:
            rank_zero_warn(f"{problem[0]} (fast_dev_run).")
        elif problem is not None:
            raise ValueError(f"{problem[0]}; {problem[1]}.")

    def _check_step_bounds(self, trainer: Trainer) -> None:
        """What can be checked before the train dataloader exists: an endless run, or max_steps below update_every."""
        if self.end_step is not None:
            return  # resuming: the checkpoint's schedule is kept
        max_steps = trainer.max_steps
        if trainer.max_epochs == -1 and max_steps == -1:
            raise self._endless_run()
        if max_steps is not None and max_steps > 0:
            # estimated_stepping_batches never exceeds max_steps, so T_end is at most this.
            bound = max(1, math.floor(self.t_end * max_steps))
            self._check_updates(trainer, bound, f"trainer.max_steps {max_steps}", "<=")

    def _build_schedule(self, trainer: Trainer) -> CosineDecay:
        total_steps = trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise self._endless_run()
        end_step = max(1, math.floor(self.t_end * total_steps))
        if self.end_step is not None and self.end_step != end_step:
            rank_zero_warn(
                f"{type(self).__name__}: this run has {total_steps} steps, which puts T_end at step {end_step}, but "
                f"the checkpoint's schedule ends at step {self.end_step}; keeping the checkpoint's so that the resumed "
                "run continues the interrupted one."
            )
            end_step = self.end_step
        self._check_updates(trainer, end_step, f"the run's {total_steps} optimizer steps")
        self.end_step = end_step
        schedule = CosineDecay(alpha=self.alpha, end_step=end_step, update_every=self.update_every)
        updates = len(range(self.update_every, end_step, self.update_every))
        rank_zero_info(
            f"{type(self).__name__}: {updates} mask updates, every {self.update_every} steps until step {end_step} of "
            f"{total_steps} (alpha {self.alpha}, grow score '{self.grow_score}')"
        )
        return schedule

    @torch.no_grad()
    def _regrow(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        assert self.masks is not None and self.schedule is not None
        params = self.parameters
        fraction = self.schedule.fraction_at(step)
        context = ScoreContext(
            params=params,
            masks=self.masks,
            seed=derive_seed(self.seed, "regrowth", self.grow_score, step),
            grads={name: param.grad for name, param in params.items()},
        )
        scores = compute_scores(self.grow_score, context)
        # One host sync, on update steps only. Under 16-mixed a step whose gradients overflowed is skipped by the
        # gradient scaler; the update is skipped with it rather than grown from inf/NaN. The gradients are the
        # reduced ones, so every DDP rank takes the same decision.
        if not bool(torch.stack([torch.isfinite(score).all() for score in scores.values()]).all()):
            rank_zero_warn(f"{type(self).__name__}: non-finite grow scores at step {step}; skipping this mask update.")
            return
        regrowth = drop_and_grow(self.masks, params, scores, fraction)
        previous = self.masks
        # Per-layer densities never change, so an update logs its own lighter metrics (_log_regrowth) instead of
        # the sparsity scalars and a chart every update_every steps.
        self.set_masks(trainer, pl_module, regrowth.masks, log=False)
        # From the agreed (rank 0's) masks, so that every rank zeroes and remembers the same connections.
        grown = {name: mask & ~previous[name] for name, mask in self.masks.items()}
        zero_grown(params, grown, trainer.optimizers)
        record = regrowth_record(step, fraction, regrowth.counts, grown, self._previous_grown, self.masks)
        self._previous_grown = Masks(grown)
        self.regrowth_updates += 1
        self.last_update = record
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(record.metrics(), step=trainer.global_step)
