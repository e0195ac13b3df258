"""The two published methods on :class:`~pruning_callbacks.IterativePruning`'s rounds.

:class:`LotteryTicket` (Frankle & Carbin 2019) prunes by magnitude and rewinds; :class:`HanMagnitude` (Han et al.
2015) prunes below a multiple of each layer's standard deviation and fine-tunes. Both are the round mechanism with
their papers' defaults and pruning rule; neither adds a schedule of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from pruning_callbacks.callbacks.rounds import IterativePruning
from pruning_callbacks.engine.checks import check_int, renamed
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.selection import STD_OF, layer_stds, prune_below_std_threshold


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
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.
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
            score="magnitude",
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
    (https://arxiv.org/abs/1506.02626): train dense (or load a trained ``dense_checkpoint``), then ``rounds``
    times prune every weight whose magnitude is below ``quality`` × the standard deviation of its layer and
    fine-tune the rest at ``finetune_lr`` for ``finetune_epochs`` epochs. By default (``std_of: layer``, the seed
    report's rule) the standard deviation is that of the layer's whole weight tensor, pruned zeros included, so an
    iteration prunes more only where fine-tuning moved weights below the threshold. ``std_of: initial`` fixes it to
    the dense layer's value at the first pruning (Distiller's ``SensitivityPruner``); ``std_of: remaining``
    measures only the surviving weights, which compounds from one iteration to the next (see
    :func:`~pruning_callbacks.engine.selection.prune_below_std_threshold`).

    Args:
        quality: Multiple of the layer's standard deviation below which weights are pruned.
        rounds: Prune-then-fine-tune rounds (the paper's iterations), as in every round-based method.
        std_of: ``layer`` (default), ``initial`` or ``remaining``.
        epochs_per_round: Epochs of dense training before the first pruning (ignored with ``dense_checkpoint``).
        finetune_epochs: Epochs of fine-tuning after each pruning.
        finetune_lr: Learning rate of the fine-tuning (the schedule restarts at every iteration).
        dense_checkpoint: Trained dense weights to start from (a Lightning checkpoint or a ``state_dict`` file).
        evaluate_test: See :class:`IterativePruning`.
        include: See :class:`~pruning_callbacks.MaskedTraining`.
        exclude: See :class:`~pruning_callbacks.MaskedTraining`.
        seed: See :class:`~pruning_callbacks.MaskedTraining`.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.
        iterations: Deprecated name of ``rounds``, accepted for one release.

    Raises:
        ValueError: If ``quality`` is not positive, ``rounds`` is not a positive integer or ``std_of`` is
            unknown.
    """

    def __init__(
        self,
        quality: float,
        rounds: int = 7,
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
        iterations: int | None = None,
    ) -> None:
        if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 < quality < math.inf:
            raise ValueError(f"quality must be a positive finite number, got {quality}")
        rounds = renamed(type(self).__name__, "iterations", "rounds", iterations, rounds, 7)
        check_int("rounds", rounds, 1)
        if std_of not in STD_OF:
            raise ValueError(f"std_of must be one of {', '.join(STD_OF)}, got {std_of!r}")
        # The schedule's fraction is a placeholder: the threshold rule decides each iteration's sparsity.
        super().__init__(
            rounds=rounds,
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
