"""Prune after training, in rounds, inside one ``fit``: Lottery Ticket IMP, Han et al., one-shot and iterative.

One :class:`IterativePruning` callback runs every round of a multi-round experiment within a single Lightning
``fit``, so a run resumes from ``last.ckpt`` like any other: round 0 trains (usually dense), then each later round
starts by pruning the trained weights, resetting them (rewinding to early weights, or keeping them to fine-tune),
and restarting the optimizer and the learning-rate schedule. :class:`~pruning_callbacks.LotteryTicket` and
:class:`~pruning_callbacks.HanMagnitude` are the same mechanism with the defaults and the pruning rule
of their papers; :mod:`~pruning_callbacks.callbacks.round_records` measures and writes down each round.

Rounds change at the *start* of the round's first epoch. Everything a transition needs (trained weights, masks,
rewind weights, round index) is in the checkpoint written at the end of the previous epoch, so a run killed at any
point redoes exactly the same transition when it resumes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.callbacks.round_records import (
    ROUND_MASKS_DIR,
    evaluate_accuracy,
    format_rounds,
    load_round_masks,
    publish_rounds,
    round_row,
    save_in_log_dir,
)
from pruning_callbacks.engine.checks import check_path, renamed
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.parameters import load_weights, reinitialize, restore, snapshot
from pruning_callbacks.engine.schedules import RoundPlan, iterative_schedule
from pruning_callbacks.engine.scores import ScoreContext, compute_scores, get_score
from pruning_callbacks.engine.seeding import derive_seed
from pruning_callbacks.engine.selection import check_pruning_request, prune_to_sparsity


class IterativePruning(MaskedTraining):
    """Train, prune, reset, and train again, for several rounds in one ``fit``.

    Round 0 trains for ``epochs_per_round`` epochs (or not at all when ``dense_checkpoint`` gives trained weights).
    Each round ``r >= 1`` then prunes the trained weights with ``score`` to the sparsity of the schedule,
    resets them, restarts optimization, and trains again:

    * ``reset: rewind`` rewinds every weight and buffer to their values after ``rewind_epoch`` epochs of round 0
      (``0`` = initialization, as in Frankle & Carbin 2019, https://arxiv.org/abs/1803.03635; ``k > 0`` is late
      rewinding, Frankle et al. 2020, https://arxiv.org/abs/1912.05671). The optimizer state is new and the
      learning-rate schedule restarts from epoch ``rewind_epoch``; the round trains ``epochs_per_round -
      rewind_epoch`` epochs so that it ends where round 0 ended.
    * ``reset: finetune`` keeps the trained weights and restarts the optimizer and the schedule from epoch 0
      (at ``finetune_lr`` if given) for ``finetune_epochs`` epochs (Renda et al. 2020 compare the two).
    * ``reset: reinit`` keeps the mask but draws fresh weights from the model's initialization (every module's
      ``reset_parameters``, seeded by ``(seed, round)``, so every rank and every resume draws the same), and trains
      ``epochs_per_round`` epochs from epoch 0 of the schedule: the random-reinitialization control of Frankle &
      Carbin 2019. With ``masks_from`` the masks are those another run saved, e.g. the lottery-ticket run whose
      tickets are being controlled.

    The schedule is one of:

    * ``rounds`` and ``prune_fraction``: each round removes ``prune_fraction`` of the remaining weights, so
      round ``r`` ends at sparsity ``1 - (1 - prune_fraction) ** r`` (exactly, to one weight);
    * ``target_sparsity`` and ``prune_fraction``: as many such rounds as reach ``target_sparsity``, the last
      landing on it exactly (iterative pruning);
    * ``target_sparsity`` alone: one round straight to it (one-shot pruning).

    The callback owns the epoch budget: it sets the Trainer's ``max_epochs`` to the total of all rounds. At the end
    of every round it logs ``round/*`` metrics and rewrites ``rounds.csv`` in the run's log directory (atomically,
    from its saved state, so a crash never loses or duplicates a row), and prints the table at the end of ``fit``.
    Every round's masks are saved to ``<log dir>/round_masks/round<r>.pt``, which ``masks_from`` reads.

    Args:
        rounds: Number of pruning rounds (the run trains ``rounds + 1`` times); with ``prune_fraction`` only.
        epochs_per_round: Epochs of round 0 and, by default, of every later round.
        prune_fraction: Fraction of the remaining weights pruned per round, in ``(0, 1)``.
        target_sparsity: Final sparsity, in ``(0, 1)``.
        score: A registered score (``magnitude``, ``random``, ...): the weights with the highest scores stay.
        scope: ``global`` (one ranking over all prunable weights) or ``layerwise``.
        distribution: Layer-wise density distribution for ``scope: layerwise`` (``uniform`` prunes every layer by
            the same fraction).
        reset: ``rewind``, ``finetune`` or ``reinit``.
        rewind_epoch: Epoch of round 0 whose weights ``rewind`` goes back to; ``0`` is initialization.
        finetune_epochs: Epochs of every round after round 0; default as described above.
        finetune_lr: Learning rate of rounds after round 0; default the model's own.
        dense_checkpoint: Weights to start from instead of training round 0: a Lightning checkpoint or a plain
            ``state_dict`` file (weights only; nothing else is restored).
        evaluate_test: Measure test accuracy at the end of each round (needs a datamodule with a test set).
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.
        masks_from: The run directory of another multi-round run (or its ``round_masks`` folder): round ``r``
            takes the masks that run saved for its round ``r`` instead of computing them. Its schedule must give
            the same sparsity per round.
        criterion: Deprecated name of ``score``, accepted for one release.

    Raises:
        ValueError: For an invalid or incomplete schedule, an unknown score, scope, reset or distribution, a
            ``rewind_epoch`` outside round 0, rewinding with ``dense_checkpoint``, or a ``masks_from`` that is not
            a folder.
    """

    def __init__(
        self,
        rounds: int | None = None,
        epochs_per_round: int = 1,
        prune_fraction: float | None = None,
        target_sparsity: float | None = None,
        score: str = "magnitude",
        scope: str = "global",
        distribution: str = "uniform",
        reset: str = "rewind",
        rewind_epoch: int = 0,
        finetune_epochs: int | None = None,
        finetune_lr: float | None = None,
        dense_checkpoint: str | None = None,
        evaluate_test: bool = True,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
        masks_from: str | None = None,
        criterion: str | None = None,
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        self.schedule = iterative_schedule(rounds, prune_fraction, target_sparsity)
        score = renamed(type(self).__name__, "criterion", "score", criterion, score, "magnitude")
        get_score(score)
        check_pruning_request(self.schedule.sparsity_at(1), scope, distribution)
        self.plan = RoundPlan.for_reset(
            self.schedule.rounds, epochs_per_round, reset, rewind_epoch, finetune_epochs, dense_checkpoint is not None
        )
        check_path("dense_checkpoint", dense_checkpoint, "file")
        check_path("masks_from", masks_from, "folder", "give the run directory of a finished run")
        if finetune_lr is not None and not 0 < finetune_lr < math.inf:
            raise ValueError(f"finetune_lr must be a positive finite number or null, got {finetune_lr}")
        self.score = score
        self.scope = scope
        self.distribution = distribution
        self.reset = reset
        self.rewind_epoch = rewind_epoch
        self.finetune_lr = finetune_lr
        self.dense_checkpoint = dense_checkpoint
        self.evaluate_test = evaluate_test
        self.masks_from = masks_from
        self.round = 0
        self.rows: list[dict[str, Any]] = []
        self.rewind_state: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ what a method decides
    def next_masks(self, trainer: Trainer, pl_module: LightningModule, round_index: int) -> Masks:
        """The masks of round ``round_index`` (>= 1), computed from the trained weights of the round before."""
        assert self.masks is not None
        if self.masks_from is not None:
            expected = round(self.schedule.sparsity_at(round_index) * self.masks.total)
            return load_round_masks(self.masks_from, round_index, self.parameters, expected, type(self).__name__)
        seed = derive_seed(self.seed, "iterative", self.score, round_index)
        scores = compute_scores(self.score, ScoreContext(self.parameters, self.masks, seed=seed, module=pl_module))
        sparsity = self.schedule.sparsity_at(round_index)
        return prune_to_sparsity(scores, self.masks, sparsity, scope=self.scope, distribution=self.distribution)

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.fit_loop.max_epochs != self.plan.total_epochs:
            rank_zero_info(
                f"{type(self).__name__}: {self.schedule.rounds + 1} rounds take {self.plan.total_epochs} epochs; "
                f"setting max_epochs to {self.plan.total_epochs} (was {trainer.fit_loop.max_epochs})."
            )
            trainer.fit_loop.max_epochs = self.plan.total_epochs

    @override
    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        if self.dense_checkpoint is not None:
            load_weights(pl_module, self.dense_checkpoint, what="dense_checkpoint")
            rank_zero_info(f"Loaded dense weights from {self.dense_checkpoint}")
        if self.reset == "rewind" and self.rewind_epoch == 0:
            self.rewind_state = snapshot(pl_module)
        return Masks.dense(self.parameters)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.reset == "rewind" and self.rewind_state is None and epoch == self.rewind_epoch:
            self.rewind_state = snapshot(pl_module)
            save_in_log_dir(trainer, self.rewind_state, f"rewind_epoch{self.rewind_epoch}.pt")
        while self.round < self.plan.round_of(epoch):
            self._begin_round(trainer, pl_module, self.round + 1)
        super().on_train_epoch_start(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.current_epoch == self.plan.last_epoch(self.round):
            metric = trainer.callback_metrics.get("val/acc")
            self._record_round(trainer, pl_module, None if metric is None else float(metric))

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rows:
            rank_zero_info(f"{type(self).__name__}: per-round results\n{format_rounds(self.rows)}")

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(round=self.round, rows=[dict(row) for row in self.rows], rewind_state=self.rewind_state)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.round = int(state_dict.get("round", 0))
        self.rows = [dict(row) for row in state_dict.get("rows", [])]
        self.rewind_state = state_dict.get("rewind_state")

    # ------------------------------------------------------------------ the round transition
    def _begin_round(self, trainer: Trainer, pl_module: LightningModule, round_index: int) -> None:
        if not any(row["round"] == round_index - 1 for row in self.rows):
            # Round 0 was empty (dense_checkpoint): measure the starting point, validation included.
            self._record_round(trainer, pl_module, evaluate_accuracy(trainer, pl_module, "val"))
        masks = self.next_masks(trainer, pl_module, round_index)
        if self.reset == "rewind":
            assert self.rewind_state is not None
            restore(pl_module, self.rewind_state)
        elif self.reset == "reinit":
            reinitialize(pl_module, derive_seed(self.seed, "reinit", round_index))
        self.round = round_index
        self.set_masks(trainer, pl_module, masks)
        save_in_log_dir(trainer, masks.state_dict(), os.path.join(ROUND_MASKS_DIR, f"round{round_index}.pt"))
        self.restart_optimization(
            trainer, lr=self.finetune_lr, start_epoch=self.rewind_epoch if self.reset == "rewind" else 0
        )

    def _record_round(self, trainer: Trainer, pl_module: LightningModule, val_acc: float | None) -> None:
        assert self.masks is not None
        if any(row["round"] == self.round for row in self.rows):
            return
        row = round_row(trainer, pl_module, self.round, self.masks, val_acc, test=self.evaluate_test)
        self.rows.append(row)
        publish_rounds(trainer, type(self).__name__, self.rows, log_chart=self.log_chart)
