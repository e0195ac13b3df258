"""Early-Bird ticket detection: report when the mask a method would produce stops changing during training.

From You et al. 2020, "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks"
(https://arxiv.org/abs/1909.11957). At the end of every training epoch the mask a pruning method would produce
from the current weights is computed (by default global magnitude pruning at ``target_sparsity``); when the
normalized Hamming distance between consecutive masks has stayed below a threshold over a window of epochs, the
ticket has emerged. The callback only tracks: it never prunes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from pruning_callbacks.init_pruning import MaskRecipe
from pruning_callbacks.masks import Masks
from pruning_callbacks.parameters import prunable_parameters
from pruning_callbacks.scores import needs_batches
from pruning_callbacks.seeding import global_seed

STATE_VERSION = 1
CHECKPOINT_NAME = "early_bird.ckpt"


class EarlyBirdTracker:
    """The detection rule on a stream of masks, without any trainer.

    A window of ``window`` masks holds ``window - 1`` distances between consecutive masks; the ticket has emerged
    once the window is full and every one of these distances is below ``threshold`` (You et al. 2020: window 5,
    threshold 0.1). Consecutive distances need only the latest mask, so that is the only mask kept.

    Args:
        window: Number of consecutive masks that must agree, at least 2.
        threshold: Normalized Hamming distance below which two consecutive masks count as equal, in ``(0, 1]``.

    Raises:
        ValueError: If ``window`` or ``threshold`` is out of range.
    """

    def __init__(self, window: int = 5, threshold: float = 0.1) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
        self.window = window
        self.threshold = float(threshold)
        self.previous: Masks | None = None
        self.distances: list[float] = []

    def update(self, masks: Masks) -> float | None:
        """Add the newest mask; return its distance to the one before (``None`` for the first mask).

        Raises:
            ValueError: If the mask covers other parameters or shapes than the one before.
        """
        distance = None
        if self.previous is not None:
            distance = masks.hamming_distance(self.previous)
            self.distances = [*self.distances, distance][-(self.window - 1) :]
        self.previous = masks
        return distance

    @property
    def converged(self) -> bool:
        """Whether the last ``window`` masks are all within ``threshold`` of their predecessor."""
        return len(self.distances) == self.window - 1 and max(self.distances) < self.threshold

    def state_dict(self) -> dict[str, Any]:
        """The latest mask (CPU bool tensors) and the distances in the window."""
        return {
            "previous_masks": self.previous.state_dict() if self.previous is not None else None,
            "distances": list(self.distances),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        previous = state.get("previous_masks")
        self.previous = Masks.from_state_dict(previous) if previous is not None else None
        self.distances = [float(distance) for distance in state.get("distances", [])][-(self.window - 1) :]


class EarlyBird(Callback):
    """Track, at every training epoch end, the mask a method would produce, and report the Early-Bird ticket.

    You et al. 2020, "Drawing Early-Bird Tickets" (https://arxiv.org/abs/1909.11957): the ticket has emerged when
    the normalized Hamming distance (:meth:`~pruning_callbacks.masks.Masks.hamming_distance`) between the masks of
    consecutive epochs has stayed below ``threshold`` for the last ``window`` masks. The mask is computed with the
    engine (:class:`~pruning_callbacks.init_pruning.MaskRecipe`), by default global magnitude pruning at
    ``target_sparsity``. The paper prunes channels by BatchNorm scale; this tracks the unstructured mask of any
    data-free score instead.

    Logged each epoch: ``early_bird/distance`` (to the previous epoch's mask, from the second epoch on) and
    ``early_bird/found`` (0 or 1). When the ticket emerges, a line is printed and, if asked, training stops
    (``stop``) and/or a checkpoint is written to ``<log dir>/early_bird.ckpt`` (``save_checkpoint``); the ticket's
    mask is :attr:`ticket` and is in the callback's state. The latest mask, the window of distances and the epoch
    the ticket emerged are in :meth:`state_dict`, so a resumed run continues the detection exactly. The decision is
    rank 0's, broadcast to every rank.

    Args:
        target_sparsity: Sparsity of the tracked mask, in ``[0, 1)``.
        score: A registered data-free score (``magnitude``, ``synflow``, ...).
        scope: ``global`` or ``layerwise``.
        distribution: Layer-wise densities for ``scope: layerwise``.
        layer_sparsity: For ``distribution: custom``.
        window: Number of consecutive masks that must agree (5 in the paper), at least 2.
        threshold: Largest normalized Hamming distance that counts as agreeing (0.1 in the paper).
        stop: Stop training at the end of the epoch where the ticket emerges.
        save_checkpoint: Save a checkpoint to ``<log dir>/early_bird.ckpt`` when the ticket emerges.
        iterations: See :class:`~pruning_callbacks.init_pruning.MaskRecipe`.
        min_weights_per_layer: See :class:`~pruning_callbacks.init_pruning.MaskRecipe`.
        input_shape: For ``synflow``; see :class:`~pruning_callbacks.init_pruning.MaskRecipe`.
        include: Glob patterns of the weights to track; ``None`` means every Conv and Linear weight.
        exclude: Glob patterns of weights to leave out.
        seed: Seed of random scores; ``None`` means the ``seed_everything`` seed.

    Raises:
        ValueError: For a data-dependent score, or any invalid option (see ``MaskRecipe`` and
            :class:`EarlyBirdTracker`); in ``setup``, for ``synflow`` without an input shape or a sparsity that
            would empty layers.
    """

    def __init__(
        self,
        target_sparsity: float,
        score: str = "magnitude",
        scope: str = "global",
        distribution: str = "uniform",
        layer_sparsity: Mapping[str, float] | None = None,
        window: int = 5,
        threshold: float = 0.1,
        stop: bool = False,
        save_checkpoint: bool = False,
        iterations: int | None = None,
        min_weights_per_layer: int = 1,
        input_shape: Sequence[int] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        self.recipe = MaskRecipe(
            target_sparsity=target_sparsity,
            score=score,
            scope=scope,
            distribution=distribution,
            layer_sparsity=layer_sparsity,
            iterations=iterations,
            min_weights_per_layer=min_weights_per_layer,
            input_shape=tuple(input_shape) if input_shape is not None else None,
        )
        if needs_batches(score):
            raise ValueError(
                f"EarlyBird tracks data-free scores (e.g. magnitude, synflow); score '{score}' reads training batches."
            )
        self.tracker = EarlyBirdTracker(window, threshold)
        for name, flag in (("stop", stop), ("save_checkpoint", save_checkpoint)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}.")
        self.stop = stop
        self.save_checkpoint = save_checkpoint
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self._seed = seed
        self.found_epoch: int | None = None
        self.last_epoch: int | None = None
        self.ticket: Masks | None = None
        self._params: dict[str, nn.Parameter] = {}

    @property
    def seed(self) -> int:
        """The seed of random scores."""
        return self._seed if self._seed is not None else global_seed()

    @property
    def found(self) -> bool:
        """Whether the Early-Bird ticket has emerged."""
        return self.found_epoch is not None

    def checkpoint_path(self, trainer: Trainer) -> Path:
        """Where ``save_checkpoint`` writes: ``<trainer.log_dir or default_root_dir>/early_bird.ckpt``."""
        return Path(trainer.log_dir or trainer.default_root_dir) / CHECKPOINT_NAME

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._params = prunable_parameters(pl_module, self.include, self.exclude)
        self.recipe.check_feasible({name: param.numel() for name, param in self._params.items()})
        if self.recipe.needs_input_shape and getattr(pl_module, "example_input_array", None) is None:
            raise ValueError(
                f"EarlyBird with score '{self.recipe.score}' reads no batches, so it needs input_shape "
                "(e.g. [3, 32, 32]) or the module's example_input_array."
            )
        if self._seed is None:
            self._seed = global_seed()

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._track(trainer, pl_module)

    def _track(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.last_epoch is not None and epoch <= self.last_epoch:
            return  # this epoch's mask is already in the restored state
        masks = self.recipe.masks(self._params, seed=self.seed, key=f"early_bird/{epoch}", module=pl_module)
        distance = self.tracker.update(masks)
        self.last_epoch = epoch
        emerged = bool(trainer.strategy.broadcast(self.tracker.converged and not self.found, src=0))
        if emerged:
            self.found_epoch = epoch
            self.ticket = masks
            rank_zero_info(
                f"{type(self).__name__}: Early-Bird ticket found at epoch {epoch}: the last {self.tracker.window} "
                f"masks ({self.recipe.describe()}, sparsity {masks.sparsity():.3f}) differ by at most "
                f"{max(self.tracker.distances):.4f} < {self.tracker.threshold} between consecutive epochs."
            )
        # Every rank holds the same weights, hence the same values; syncing only keeps Lightning's DDP check quiet.
        sync = trainer.world_size > 1
        if distance is not None:
            pl_module.log("early_bird/distance", distance, sync_dist=sync)
        pl_module.log("early_bird/found", float(self.found), sync_dist=sync)
        if emerged and self.save_checkpoint:
            trainer.save_checkpoint(self.checkpoint_path(trainer))
        if emerged and self.stop:
            trainer.should_stop = True

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            **self.tracker.state_dict(),
            "found_epoch": self.found_epoch,
            "last_epoch": self.last_epoch,
            "ticket": self.ticket.state_dict() if self.ticket is not None else None,
            "seed": self.seed,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)
        found_epoch = state_dict.get("found_epoch")
        self.found_epoch = int(found_epoch) if found_epoch is not None else None
        last_epoch = state_dict.get("last_epoch")
        self.last_epoch = int(last_epoch) if last_epoch is not None else None
        ticket = state_dict.get("ticket")
        self.ticket = Masks.from_state_dict(ticket) if ticket is not None else None
        if state_dict.get("seed") is not None:
            self._seed = int(state_dict["seed"])
