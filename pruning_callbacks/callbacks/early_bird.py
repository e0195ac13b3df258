"""Early-Bird tickets: draw the ticket when its channel mask stops changing, prune it and retrain it, in one ``fit``.

From You et al. 2020, "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks"
(https://arxiv.org/abs/1909.11957), as the authors' code runs it (GATECH-EIC/Early-Bird-Tickets: ``main.py`` for the
search, ``resprune.py`` for the pruning, ``main_c.py`` for the retraining):

1. train dense with an L1 penalty on the BatchNorm scales ``γ`` (network slimming, strength ``l1_penalty``);
2. before every epoch, take the channel mask that prunes the ``target_sparsity`` share of channels with the
   smallest ``|γ|`` over all ranked BatchNorm layers; the ticket is drawn once the newest mask is within
   ``threshold`` normalized Hamming distance of every mask in the FIFO of the last ``window`` masks;
3. prune the ticket's channels (conv output channels, their BatchNorm ``γ`` and ``β``, and the readers' input
   channels inside a block; all kept at exactly zero from then on) and retrain the pruned network from the ticket's
   weights with a new optimizer, continuing the original learning-rate schedule to the end of the run.

``granularity: unstructured`` is this project's variant: it tracks the unstructured mask of a data-free score
(global magnitude by default) and, by default, only reports the ticket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.engine.channels import add_l1_subgradient_
from pruning_callbacks.engine.checks import check_flag, optional_int
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.seeding import global_seed
from pruning_callbacks.engine.tickets import CHANNEL_RANKING, GRANULARITIES, L1_PENALTY, TicketMasks
from pruning_callbacks.engine.tracking import EarlyBirdTracker

__all__ = ["CHANNEL_RANKING", "CHECKPOINT_NAME", "GRANULARITIES", "L1_PENALTY", "EarlyBird", "EarlyBirdTracker"]

CHECKPOINT_NAME = "early_bird.ckpt"


class EarlyBird(MaskedTraining):
    """Draw the Early-Bird ticket during dense training, then prune and retrain it (You et al. 2020).

    See the module docstring for the pipeline. The run's length is the Trainer's ``max_epochs``: retraining
    continues the original schedule from the epoch the ticket was drawn to the end, as the authors'
    ``retrain_continue.sh`` does. Residual connections: every BatchNorm2d is ranked, as in the authors' code.
    Channels internal to a block (a BatchNorm whose output only reaches convolutions) are removed entirely. A
    pruned channel on the residual stream (a block's last BatchNorm, a shortcut's BatchNorm, the stem's) has its
    producing conv output and ``γ``, ``β`` zeroed, but the channel itself lives on through the shortcut additions:
    the authors' ``resprune.py`` likewise zeroes such channels and keeps them.

    Logged each epoch while searching: ``early_bird/distance`` (largest distance of the newest mask to the older
    masks in the FIFO, once it is full) and ``early_bird/found`` (0 or 1); ``early_bird/drawn_epoch`` when the ticket
    is drawn. With ``save_checkpoint`` the weights at the ticket are saved to ``<log dir>/early_bird.ckpt``; with
    ``stop`` training ends there. Everything is in :meth:`state_dict`, so a resumed run continues exactly.

    Args:
        target_sparsity: Share pruned: of all ranked channels (``channel``) or of the prunable weights
            (``unstructured``), in ``[0, 1)``.
        granularity: ``channel`` (the paper) or ``unstructured`` (this project's variant).
        l1_penalty: Strength ``λ`` of the L1 penalty on ``γ`` (adds ``λ · sign(γ)`` to its gradient before every
            optimizer step, for the whole run as the authors' code does); ``None`` means ``1e-4`` for ``channel``
            and 0 for ``unstructured``.
        window: Masks in the FIFO (5 in the paper), at least 2.
        threshold: Largest normalized Hamming distance that counts as agreeing (0.1 in the paper).
        prune: Prune the ticket and retrain it; ``None`` means true for ``channel`` and false for ``unstructured``.
        min_channels_per_layer: Channels every BatchNorm layer keeps (``channel``); 0 allows emptying a layer.
        stop: End training when the ticket is drawn.
        save_checkpoint: Save a checkpoint to ``<log dir>/early_bird.ckpt`` when the ticket is drawn.
        score: For ``unstructured``: a registered data-free score (``magnitude``, ``synflow``, ...).
        scope: For ``unstructured``: ``global`` or ``layerwise``.
        distribution: For ``unstructured`` with ``scope: layerwise``.
        layer_sparsity: For ``unstructured`` with ``distribution: custom``.
        iterations: For ``unstructured``; see :class:`~pruning_callbacks.engine.recipes.MaskRecipe`.
        min_weights_per_layer: For ``unstructured``; see :class:`~pruning_callbacks.engine.recipes.MaskRecipe`.
        input_shape: For ``unstructured`` with ``synflow``.
        include: Glob patterns of the BatchNorm modules to rank (``channel``) or of the weights to track
            (``unstructured``); ``None`` means all.
        exclude: Glob patterns to leave out.
        seed: Seed of random scores; ``None`` means the ``seed_everything`` seed.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.

    Raises:
        ValueError: For an unknown granularity, a data-dependent score, a negative penalty, unstructured options
            with ``granularity: channel``, or any invalid option of ``MaskRecipe`` and :class:`EarlyBirdTracker`;
            in ``setup``, for a model without BatchNorm layers or one ``torch.fx`` cannot trace (``channel``).
    """

    def __init__(
        self,
        target_sparsity: float,
        granularity: str = "channel",
        l1_penalty: float | None = None,
        window: int = 5,
        threshold: float = 0.1,
        prune: bool | None = None,
        min_channels_per_layer: int = 1,
        stop: bool = False,
        save_checkpoint: bool = False,
        score: str = "magnitude",
        scope: str = "global",
        distribution: str = "uniform",
        layer_sparsity: Mapping[str, float] | None = None,
        iterations: int | None = None,
        min_weights_per_layer: int = 1,
        input_shape: Sequence[int] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
    ) -> None:
        super().__init__(include=include, exclude=exclude, seed=seed, log_chart=log_chart)
        self.selection = TicketMasks(
            target_sparsity,
            granularity,
            l1_penalty,
            min_channels_per_layer,
            score=score,
            scope=scope,
            distribution=distribution,
            layer_sparsity=layer_sparsity,
            iterations=iterations,
            min_weights_per_layer=min_weights_per_layer,
            input_shape=tuple(input_shape) if input_shape is not None else None,
        )
        for name, flag in (("stop", stop), ("save_checkpoint", save_checkpoint), ("prune", prune)):
            check_flag(name, flag, allow_none=True)
        self.tracker = EarlyBirdTracker(window, threshold)
        self.recipe = self.selection.recipe
        self.target_sparsity = self.selection.target_sparsity
        self.granularity = granularity
        self.l1_penalty = self.selection.l1_penalty
        self.prune = (granularity == "channel") if prune is None else prune
        self.min_channels_per_layer = min_channels_per_layer
        self.stop = stop
        self.save_checkpoint = save_checkpoint
        self.found_epoch: int | None = None
        self.last_epoch: int | None = None
        self.ticket: Masks | None = None

    @property
    def found(self) -> bool:
        """Whether the Early-Bird ticket has been drawn."""
        return self.found_epoch is not None

    def checkpoint_path(self, trainer: Trainer) -> Path:
        """Where ``save_checkpoint`` writes: ``<trainer.log_dir or default_root_dir>/early_bird.ckpt``."""
        return Path(trainer.log_dir or trainer.default_root_dir) / CHECKPOINT_NAME

    def summary_info(self) -> dict[str, Any]:
        """What the run found, for ``summary.json``: whether and when the ticket was drawn, and its sparsity."""
        return {
            "granularity": self.granularity,
            "found": self.found,
            "drawn_after_epochs": self.found_epoch,
            "ticket_sparsity": self.ticket.sparsity() if self.ticket is not None else None,
            "pruned": self.masks is not None,
        }

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._seed is None:
            self._seed = global_seed()
        self.selection.bind(pl_module, self.include, self.exclude)
        self._params = self.selection.params

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.last_epoch is None and not self.found:
            # The authors compare masks before every epoch, the first one (the initialization) included.
            self._observe(trainer, pl_module, epochs_trained=0)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.found and self.prune and self.masks is None:
            self._prune_ticket(trainer, pl_module)
        super().on_train_epoch_start(trainer, pl_module)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        add_l1_subgradient_(self.selection.scales, self.l1_penalty)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.found:
            self._observe(trainer, pl_module, epochs_trained=trainer.current_epoch + 1)
        sync = trainer.world_size > 1
        # Every rank holds the same values; syncing only keeps Lightning's DDP check quiet.
        pl_module.log("early_bird/found", float(self.found), sync_dist=sync)
        if self.found:
            pl_module.log("early_bird/drawn_epoch", float(self.found_epoch), sync_dist=sync)

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        ticket = self.ticket.state_dict() if self.ticket is not None else None
        epochs = {"found_epoch": self.found_epoch, "last_epoch": self.last_epoch}
        return {**super().state_dict(), **self.tracker.state_dict(), **epochs, "ticket": ticket}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.tracker.load_state_dict(state_dict)
        self.found_epoch = optional_int(state_dict.get("found_epoch"))
        self.last_epoch = optional_int(state_dict.get("last_epoch"))
        ticket = state_dict.get("ticket")
        self.ticket = Masks.from_state_dict(ticket) if ticket is not None else None

    # ------------------------------------------------------------------ internals
    def _observe(self, trainer: Trainer, pl_module: LightningModule, epochs_trained: int) -> None:
        """Add the mask after ``epochs_trained`` epochs to the FIFO and draw the ticket if the rule says so."""
        if self.last_epoch is not None and epochs_trained <= self.last_epoch:
            return  # this mask is already in the restored state
        masks = self.selection.current(pl_module, self.seed, key=f"early_bird/{epochs_trained}")
        distances = self.tracker.update(masks)
        self.last_epoch = epochs_trained
        if distances and epochs_trained > 0:
            pl_module.log("early_bird/distance", max(distances), sync_dist=trainer.world_size > 1)
        # Rank 0 decides, and its mask is the ticket: every rank then prunes, saves and stops alike.
        drawn = bool(trainer.strategy.broadcast(self.tracker.converged, src=0))
        if not drawn:
            return
        if trainer.world_size > 1:
            device = next(iter(self._params.values())).device
            masks = Masks.from_state_dict(trainer.strategy.broadcast(masks.state_dict(), src=0)).to(device)
        self.found_epoch = epochs_trained
        self.ticket = masks
        rank_zero_info(
            f"{type(self).__name__}: Early-Bird ticket drawn after {epochs_trained} epochs: the last "
            f"{self.tracker.window} {self.granularity} masks (sparsity {masks.sparsity():.3f}) are within "
            f"{max(self.tracker.distances):.4f} <= {self.tracker.threshold} of the newest."
        )
        if self.save_checkpoint:
            trainer.save_checkpoint(self.checkpoint_path(trainer))
        if self.stop:
            trainer.should_stop = True

    def _prune_ticket(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prune the ticket's channels (or weights) and retrain with a new optimizer, continuing the schedule."""
        assert self.ticket is not None
        self.set_masks(trainer, pl_module, self.selection.prune(pl_module, self.ticket))
        self.restart_optimization(trainer, start_epoch=trainer.current_epoch)
        rank_zero_info(
            f"{type(self).__name__}: pruned the ticket ({self.granularity}, {self.ticket.sparsity():.3f} of the "
            f"{'channels' if self.granularity == 'channel' else 'weights'}); retraining from epoch "
            f"{trainer.current_epoch} to {trainer.max_epochs} with a new optimizer."
        )
