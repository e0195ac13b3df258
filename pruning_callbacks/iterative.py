"""Prune after training, in rounds, inside one ``fit``: Lottery Ticket IMP, Han et al., one-shot and iterative.

One :class:`IterativePruning` callback runs every round of a multi-round experiment within a single Lightning
``fit``, so a run resumes from ``last.ckpt`` like any other: round 0 trains (usually dense), then each later round
starts by pruning the trained weights, resetting them (rewinding to early weights, or keeping them to fine-tune),
and restarting the optimizer and the learning-rate schedule. :class:`LotteryTicket` and :class:`HanMagnitude` are
the same mechanism with the defaults and the pruning rule of their papers.

Rounds change at the *start* of the round's first epoch. Everything a transition needs (trained weights, masks,
rewind weights, round index) is in the checkpoint written at the end of the previous epoch, so a run killed at any
point redoes exactly the same transition when it resumes.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from pruning_callbacks.base import MaskedTraining
from pruning_callbacks.io import atomic_torch_save, atomic_write_text
from pruning_callbacks.lightning_compat import transfer_batch
from pruning_callbacks.masks import Masks
from pruning_callbacks.schedules import Iterative
from pruning_callbacks.scores import ScoreContext, compute_scores, get_score
from pruning_callbacks.seeding import derive_seed
from pruning_callbacks.selection import (
    STD_OF,
    check_pruning_request,
    layer_stds,
    prune_below_std_threshold,
    prune_to_sparsity,
)

RESETS = ("rewind", "finetune", "reinit")
ROUND_MASKS_DIR = "round_masks"
"""Folder of the run directory where every round's masks are saved (``round<r>.pt``), for ``masks_from``."""
ROUND_COLUMNS = ("round", "epoch", "sparsity", "remaining_weights", "val_acc", "test_acc")


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

    def round_of(self, epoch: int) -> int:
        """Index of the round that ``epoch`` belongs to."""
        return bisect.bisect_right(self.starts, epoch) - 1

    def last_epoch(self, round_index: int) -> int:
        """Last epoch of round ``round_index`` (one before its start for an empty round)."""
        ends = (*self.starts[1:], self.total_epochs)
        return ends[round_index] - 1


class IterativePruning(MaskedTraining):
    """Train, prune, reset, and train again, for several rounds in one ``fit``.

    Round 0 trains for ``epochs_per_round`` epochs (or not at all when ``dense_checkpoint`` gives trained weights).
    Each round ``r >= 1`` then prunes the trained weights with ``criterion`` to the sparsity of the schedule,
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
        criterion: A registered score (``magnitude``, ``random``, ...): the weights with the highest scores stay.
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
        include: See :class:`~pruning_callbacks.base.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.base.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.base.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.base.MaskedTraining`.
        masks_from: The run directory of another multi-round run (or its ``round_masks`` folder): round ``r``
            takes the masks that run saved for its round ``r`` instead of computing them. Its schedule must give
            the same sparsity per round.

    Raises:
        ValueError: For an invalid or incomplete schedule, an unknown criterion, scope, reset or distribution, a
            ``rewind_epoch`` outside round 0, rewinding with ``dense_checkpoint``, or a ``masks_from`` that is not
            a folder.
    """

    def __init__(
        self,
        rounds: int | None = None,
        epochs_per_round: int = 1,
        prune_fraction: float | None = None,
        target_sparsity: float | None = None,
        criterion: str = "magnitude",
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
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        self.schedule = _schedule(rounds, prune_fraction, target_sparsity)
        get_score(criterion)
        check_pruning_request(self.schedule.sparsity_at(1), scope, distribution)
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
        if dense_checkpoint is not None and reset == "rewind":
            raise ValueError(
                "dense_checkpoint starts from trained weights, so there is no early point to rewind to; "
                "use reset: finetune with dense_checkpoint"
            )
        if dense_checkpoint is not None and not os.path.isfile(dense_checkpoint):
            raise ValueError(f"dense_checkpoint {dense_checkpoint!r} is not a file")
        if masks_from is not None and not os.path.isdir(masks_from):
            raise ValueError(f"masks_from {masks_from!r} is not a folder; give the run directory of a finished run")
        if finetune_epochs is not None and finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be a positive integer or null, got {finetune_epochs}")
        if finetune_lr is not None and not 0 < finetune_lr < math.inf:
            raise ValueError(f"finetune_lr must be a positive finite number or null, got {finetune_lr}")
        self.criterion = criterion
        self.scope = scope
        self.distribution = distribution
        self.reset = reset
        self.rewind_epoch = rewind_epoch
        self.finetune_lr = finetune_lr
        self.dense_checkpoint = dense_checkpoint
        self.evaluate_test = evaluate_test
        self.masks_from = masks_from
        later = finetune_epochs or (epochs_per_round - rewind_epoch if reset == "rewind" else epochs_per_round)
        first = 0 if dense_checkpoint is not None else epochs_per_round
        self.plan = RoundPlan.from_lengths([first] + [later] * self.schedule.rounds)
        self.round = 0
        self.rows: list[dict[str, Any]] = []
        self.rewind_state: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ what a method decides
    def next_masks(self, trainer: Trainer, pl_module: LightningModule, round_index: int) -> Masks:
        """The masks of round ``round_index`` (>= 1), computed from the trained weights of the round before."""
        assert self.masks is not None
        if self.masks_from is not None:
            return self._saved_masks(round_index)
        context = ScoreContext(
            params=self.parameters,
            masks=self.masks,
            seed=derive_seed(self.seed, "iterative", self.criterion, round_index),
            module=pl_module,
        )
        scores = compute_scores(self.criterion, context)
        return prune_to_sparsity(
            scores, self.masks, self.schedule.sparsity_at(round_index), scope=self.scope, distribution=self.distribution
        )

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
            _load_weights(pl_module, self.dense_checkpoint)
        if self.reset == "rewind" and self.rewind_epoch == 0:
            self.rewind_state = _snapshot(pl_module)
        return Masks.dense(self.parameters)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.reset == "rewind" and self.rewind_state is None and epoch == self.rewind_epoch:
            self.rewind_state = _snapshot(pl_module)
            self._save_rewind_checkpoint(trainer)
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
            self._record_round(trainer, pl_module, self._accuracy(trainer, pl_module, "val"))
        masks = self.next_masks(trainer, pl_module, round_index)
        if self.reset == "rewind":
            assert self.rewind_state is not None
            pl_module.load_state_dict(
                {name: value.to(pl_module.device) for name, value in self.rewind_state.items()}, strict=True
            )
        elif self.reset == "reinit":
            reinitialize(pl_module, derive_seed(self.seed, "reinit", round_index))
        self.round = round_index
        self.set_masks(trainer, pl_module, masks)
        self._save_round_masks(trainer, round_index)
        self.restart_optimization(
            trainer, lr=self.finetune_lr, start_epoch=self.rewind_epoch if self.reset == "rewind" else 0
        )

    def _record_round(self, trainer: Trainer, pl_module: LightningModule, val_acc: float | None) -> None:
        assert self.masks is not None
        if any(row["round"] == self.round for row in self.rows):
            return
        test_acc = self._accuracy(trainer, pl_module, "test") if self.evaluate_test else None
        row = {
            "round": self.round,
            "epoch": trainer.current_epoch,
            "sparsity": self.masks.sparsity(),
            "remaining_weights": self.masks.remaining(),
            "val_acc": val_acc,
            "test_acc": test_acc,
        }
        self.rows.append(row)
        metrics = {f"round/{key}": float(value) for key, value in row.items() if value is not None}
        rank_zero_info(
            f"{type(self).__name__}: round {self.round} done: sparsity {row['sparsity']:.4f}, "
            f"val/acc {_fmt(val_acc)}, test/acc {_fmt(test_acc)}"
        )
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                if self.log_chart and isinstance(logger, TensorBoardLogger) and len(self.rows) > 1:
                    from pruning_callbacks.plotting import rounds_figure

                    figure = rounds_figure(self.rows, title=f"{type(self).__name__}: accuracy after each round")
                    logger.experiment.add_figure("round/accuracy_vs_weights", figure, global_step=trainer.global_step)
            if log_dir is not None:
                atomic_write_text(os.path.join(log_dir, "rounds.csv"), rounds_csv(self.rows))

    @torch.no_grad()
    def _accuracy(self, trainer: Trainer, pl_module: LightningModule, split: str) -> float | None:
        """Top-1 accuracy of the current weights on the datamodule's ``val`` or ``test`` split (every rank alike)."""
        datamodule = trainer.datamodule
        if datamodule is None:
            return None
        loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
        if isinstance(loader, (list, tuple)):
            # Extra test loaders (an OOD set) come after the split itself.
            loader = loader[0] if loader else None
        if not loader:
            return None
        was_training = pl_module.training
        pl_module.eval()
        correct = torch.zeros((), dtype=torch.long, device=pl_module.device)
        total = 0
        with trainer.precision_plugin.forward_context():
            for batch in loader:
                images, labels = transfer_batch(pl_module, batch)[:2]
                correct += (pl_module(images).argmax(dim=-1) == labels).sum()
                total += labels.numel()
        pl_module.train(was_training)
        # Sharded loaders give each rank a part, unsharded ones the whole set: summing both counts is right either way.
        counts = trainer.strategy.reduce(
            torch.stack([correct, torch.tensor(total, device=correct.device)]).double(), reduce_op="sum"
        )
        return float(counts[0] / counts[1]) if counts[1] > 0 else None

    def _save_rewind_checkpoint(self, trainer: Trainer) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero and log_dir is not None and self.rewind_state is not None:
            atomic_torch_save(self.rewind_state, os.path.join(log_dir, f"rewind_epoch{self.rewind_epoch}.pt"))

    def _save_round_masks(self, trainer: Trainer, round_index: int) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero and log_dir is not None and self.masks is not None:
            path = os.path.join(log_dir, ROUND_MASKS_DIR, f"round{round_index}.pt")
            atomic_torch_save(self.masks.state_dict(), path)

    def _saved_masks(self, round_index: int) -> Masks:
        assert self.masks_from is not None and self.masks is not None
        folder = self.masks_from
        if os.path.basename(os.path.normpath(folder)) != ROUND_MASKS_DIR:
            folder = os.path.join(folder, ROUND_MASKS_DIR)
        path = os.path.join(folder, f"round{round_index}.pt")
        if not os.path.isfile(path):
            saved = sorted(name for name in os.listdir(folder)) if os.path.isdir(folder) else []
            raise ValueError(
                f"masks_from has no masks for round {round_index}: {path} does not exist (found: "
                f"{', '.join(saved) or 'nothing'}); give the run directory of a run that reached this round"
            )
        masks = Masks.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        try:
            masks.check_compatible({name: param.shape for name, param in self.parameters.items()})
        except ValueError as error:
            raise ValueError(f"masks_from {path} does not fit the model: {error}") from None
        expected = round(self.schedule.sparsity_at(round_index) * masks.total)
        if masks.total - masks.remaining() != expected:
            raise ValueError(
                f"masks_from {path} prunes {masks.total - masks.remaining()} of {masks.total} weights, but round "
                f"{round_index} of this run's schedule prunes {expected}; use the same rounds and prune_fraction"
            )
        rank_zero_info(f"{type(self).__name__}: round {round_index} takes its masks from {path}")
        return masks


class LotteryTicket(IterativePruning):
    """Lottery Ticket iterative magnitude pruning with rewinding (IMP).

    Frankle & Carbin 2019, "The Lottery Ticket Hypothesis" (https://arxiv.org/abs/1803.03635), with late
    rewinding from Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis"
    (https://arxiv.org/abs/1912.05671). Each round removes ``prune_fraction`` of the remaining weights by
    magnitude and rewinds the survivors to their values at ``rewind_epoch`` (``0`` = initialization). With
    ``reset: finetune`` the survivors keep their trained values instead (IMP with fine-tuning); with ``reset:
    reinit`` they are drawn afresh from the initializer, the paper's random-reinitialization control (add
    ``masks_from`` to reuse the masks of the ticket run being controlled).

    Scope: the seed report prunes layer-wise (every layer by ``prune_fraction``), which is this class's default
    and ``configs/lottery_ticket.yaml``; the LTH papers and open_lth prune ResNets globally (one ranking over all
    layers, ``scope: global``), as ``configs/repro/lth_*.yaml`` do.

    Args:
        rounds: Pruning rounds; sparsity after round ``r`` is ``1 - (1 - prune_fraction) ** r``.
        epochs_per_round: Training epochs of each round (rounds after the first train ``epochs_per_round -
            rewind_epoch`` epochs when rewinding).
        prune_fraction: Fraction of the remaining weights removed per round.
        scope: ``layerwise`` (the seed report) or ``global`` (Frankle & Carbin and open_lth for ResNets).
        rewind_epoch: ``0`` rewinds to initialization; ``k > 0`` to the weights after ``k`` epochs.
        reset: ``rewind``, ``finetune`` or ``reinit``.
        finetune_lr: Learning rate of rounds after the first when fine-tuning; default the model's own.
        evaluate_test: See :class:`IterativePruning`.
        include: See :class:`~pruning_callbacks.base.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.base.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.base.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.base.MaskedTraining`.
        masks_from: See :class:`IterativePruning`.
    """

    def __init__(
        self,
        rounds: int = 10,
        epochs_per_round: int = 200,
        prune_fraction: float = 0.2,
        scope: str = "layerwise",
        rewind_epoch: int = 0,
        reset: str = "rewind",
        finetune_lr: float | None = None,
        evaluate_test: bool = True,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
        masks_from: str | None = None,
    ) -> None:
        super().__init__(
            rounds=rounds,
            epochs_per_round=epochs_per_round,
            prune_fraction=prune_fraction,
            criterion="magnitude",
            scope=scope,
            reset=reset,
            rewind_epoch=rewind_epoch,
            finetune_lr=finetune_lr,
            evaluate_test=evaluate_test,
            include=include,
            exclude=exclude,
            seed=seed,
            log_chart=log_chart,
            masks_from=masks_from,
        )


class HanMagnitude(IterativePruning):
    """Han et al. iterative pruning with a per-layer threshold of ``quality`` × a standard deviation.

    Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks"
    (https://arxiv.org/abs/1506.02626): train dense (or load a trained ``dense_checkpoint``), then ``iterations``
    times prune every weight whose magnitude is below ``quality`` × the standard deviation of its layer and
    fine-tune the rest at ``finetune_lr`` for ``finetune_epochs`` epochs. By default (``std_of: layer``, the seed
    report's rule) the standard deviation is that of the layer's whole weight tensor, pruned zeros included, so an
    iteration prunes more only where fine-tuning moved weights below the threshold. ``std_of: initial`` fixes it to
    the dense layer's value at the first pruning (Distiller's ``SensitivityPruner``); ``std_of: remaining``
    measures only the surviving weights, which compounds from one iteration to the next (see
    :func:`~pruning_callbacks.selection.prune_below_std_threshold`).

    Args:
        quality: Multiple of the layer's standard deviation below which weights are pruned.
        iterations: Prune-then-fine-tune iterations.
        std_of: ``layer`` (default), ``initial`` or ``remaining``.
        epochs_per_round: Epochs of dense training before the first pruning (ignored with ``dense_checkpoint``).
        finetune_epochs: Epochs of fine-tuning after each pruning.
        finetune_lr: Learning rate of the fine-tuning (the schedule restarts at every iteration).
        dense_checkpoint: Trained dense weights to start from (a Lightning checkpoint or a ``state_dict`` file).
        evaluate_test: See :class:`IterativePruning`.
        include: See :class:`~pruning_callbacks.base.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.base.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.base.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.base.MaskedTraining`.

    Raises:
        ValueError: If ``quality`` is not positive, ``iterations`` is not a positive integer or ``std_of`` is
            unknown.
    """

    def __init__(
        self,
        quality: float,
        iterations: int = 7,
        std_of: str = "layer",
        epochs_per_round: int = 200,
        finetune_epochs: int = 100,
        finetune_lr: float = 0.01,
        dense_checkpoint: str | None = None,
        evaluate_test: bool = True,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
    ) -> None:
        if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 < quality < math.inf:
            raise ValueError(f"quality must be a positive finite number, got {quality}")
        if iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations}")
        if std_of not in STD_OF:
            raise ValueError(f"std_of must be one of {', '.join(STD_OF)}, got {std_of!r}")
        # The schedule's fraction is a placeholder: the threshold rule decides each iteration's sparsity.
        super().__init__(
            rounds=iterations,
            epochs_per_round=epochs_per_round,
            prune_fraction=0.5,
            reset="finetune",
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            dense_checkpoint=dense_checkpoint,
            evaluate_test=evaluate_test,
            include=include,
            exclude=exclude,
            seed=seed,
            log_chart=log_chart,
        )
        self.quality = quality
        self.std_of = std_of
        self.initial_stds: dict[str, float] | None = None

    @override
    def next_masks(self, trainer: Trainer, pl_module: LightningModule, round_index: int) -> Masks:
        assert self.masks is not None
        if self.std_of == "initial" and self.initial_stds is None:
            self.initial_stds = layer_stds(self.parameters, self.masks)
        return prune_below_std_threshold(
            self.parameters, self.masks, self.quality, std_of=self.std_of, initial_stds=self.initial_stds
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["initial_stds"] = dict(self.initial_stds) if self.initial_stds is not None else None
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        stds = state_dict.get("initial_stds")
        self.initial_stds = {str(name): float(value) for name, value in stds.items()} if stds is not None else None


def _schedule(rounds: int | None, prune_fraction: float | None, target_sparsity: float | None) -> Iterative:
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


def reinitialize(module: nn.Module, seed: int) -> None:
    """Draw fresh weights for ``module`` from its own initialization, seeded: every ``reset_parameters`` in it.

    The random-reinitialization control of Frankle & Carbin 2019 (https://arxiv.org/abs/1803.03635): the same
    architecture and initializer as at the start, new random values. BatchNorm running statistics are reset too.
    The global random state is left as it was.

    Args:
        module: The model.
        seed: Seed of the draw (the same seed draws the same weights on the same device type).
    """
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for submodule in module.modules():
            reset = getattr(submodule, "reset_parameters", None)
            if callable(reset):
                reset()


def _snapshot(pl_module: LightningModule) -> dict[str, Tensor]:
    """A CPU copy of every weight and buffer (what rewinding restores)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in pl_module.state_dict().items()}


def _load_weights(pl_module: LightningModule, path: str) -> None:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    try:
        pl_module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"dense_checkpoint {path!r} does not fit the model: {first}") from None
    rank_zero_info(f"Loaded dense weights from {path}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def rounds_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-round results as CSV text with the columns of :data:`ROUND_COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROUND_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in ROUND_COLUMNS})
    return buffer.getvalue()


def format_rounds(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-round results as a Markdown table."""
    lines = ["| round | sparsity | remaining weights | val/acc | test/acc |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['round']} | {row['sparsity']:.4f} | {row['remaining_weights']:,} | {_fmt(row['val_acc'])} | "
            f"{_fmt(row['test_acc'])} |"
        )
    return "\n".join(lines)
