"""L1-norm filter pruning after training (Li et al. 2017), on the round mechanism of :class:`IterativePruning`.

Li, Kadav, Durdanovic, Samet & Graf 2017, "Pruning Filters for Efficient ConvNets" (ICLR,
https://arxiv.org/abs/1608.08710): train, then remove from each chosen convolution the filters with the smallest
L1 norm ``Σ|W|`` (the same share in every layer), with the feature maps they produce and the next layer's kernels
that read them, and retrain. For ResNets the paper prunes only the first convolution of each residual block,
since the shortcut fixes the channels of the second; the reference code (``res56prune.py`` in
Eric-mingjie/rethinking-network-pruning) does the same, with a per-layer ``int(channels × (1 - share))`` filters
kept.

The network keeps its shape while it trains: a pruned filter's weights, its BatchNorm's ``γ`` and ``β`` and the
reading kernels are held at exactly zero (:func:`~pruning_callbacks.engine.channels.expand_channel_masks`).
``python cli.py export CKPT --slim out.pt`` then removes them physically (:mod:`analysis.slim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from pruning_callbacks.callbacks.rounds import IterativePruning
from pruning_callbacks.engine.channels import (
    ChannelGroup,
    channel_groups,
    expand_channel_masks,
    filter_l1_norms,
    layer_channel_masks,
    residual_streams,
    stream_channel_masks,
)
from pruning_callbacks.engine.checks import check_choice, renamed
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.seeding import derive_seed

FILTER_SCORES = ("l1", "random")
LAYERS = ("inner", "stage", "all")


class FilterPruning(IterativePruning):
    """Prune whole convolution filters by their L1 norm after training, then fine-tune (Li et al. 2017).

    Round 0 trains the dense network for ``epochs_per_round`` epochs (or starts from ``dense_checkpoint``). Each
    later round removes, from every ranked layer, the filters with the smallest L1 norm until the layer has lost
    ``channel_sparsity`` of its filters (one round by default; ``prune_fraction`` makes it iterative, as for
    :class:`IterativePruning`), and retrains as ``reset`` says (``finetune`` by default: the paper retrains the
    pruned network from its trained weights).

    Which layers are ranked (``layers``):

    * ``inner`` (the paper's choice for ResNets): the convolutions whose output only feeds another convolution,
      i.e. the first convolution of every residual block. These channels disappear entirely when slimmed.
    * ``stage``: ``inner``, plus the channels of every residual stream (a ResNet stage's stem or first shortcut and
      each block's last convolution), pruned together: the same channels from every writer of the stream, ranked by
      the L1 norms summed over those writers. These channels also disappear when slimmed, which is what makes the
      network much faster (``benchmarks/latency.py``); this goes beyond the paper, which leaves the streams whole.
      The kernels that read a pruned stream channel are not masked while training (they multiply zeros).
    * ``all``: every convolution followed by a BatchNorm, each ranked on its own. A filter that writes to a
      residual stream is zeroed in its branch, but the channel lives on through the shortcut (slimming removes it
      only where every writer of that stream channel pruned it).

    Args:
        channel_sparsity: Share of each ranked layer's filters to prune by the end, in ``(0, 1)``.
        score: ``l1`` (the paper) or ``random`` (the reference code's ``--random_rank`` control; seeded).
        layers: ``inner``, ``stage`` or ``all``, see above.
        prune_fraction: Share of the remaining filters pruned per round; ``None`` for one round.
        epochs_per_round: Epochs of round 0 and, by default, of every later round.
        reset: ``finetune`` (default), ``rewind`` or ``reinit``; see :class:`IterativePruning`.
        rewind_epoch: See :class:`IterativePruning`.
        finetune_epochs: Epochs of every round after round 0.
        finetune_lr: Learning rate of the rounds after round 0.
        dense_checkpoint: Trained weights to start from instead of training round 0.
        evaluate_test: Measure test accuracy at the end of each round.
        include: Glob patterns of the BatchNorm modules whose channels are ranked; ``None`` means all.
        exclude: Glob patterns of BatchNorm modules to leave out (the paper skips the layers it finds sensitive).
        seed: Seed of the ``random`` score.
        log_chart: See :class:`~pruning_callbacks.MaskedTraining`.
        criterion: Deprecated name of ``score``, accepted for one release.

    Raises:
        ValueError: For an unknown score or layer choice, a ``channel_sparsity`` outside ``(0, 1)``, any
            invalid option of :class:`IterativePruning`; in ``setup``, for a model ``torch.fx`` cannot trace or
            with no layer to rank.
    """

    def __init__(
        self,
        channel_sparsity: float,
        score: str = "l1",
        layers: str = "inner",
        prune_fraction: float | None = None,
        epochs_per_round: int = 1,
        reset: str = "finetune",
        rewind_epoch: int = 0,
        finetune_epochs: int | None = None,
        finetune_lr: float | None = None,
        dense_checkpoint: str | None = None,
        evaluate_test: bool = True,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
        log_chart: bool = True,
        criterion: str | None = None,
    ) -> None:
        score = renamed(type(self).__name__, "criterion", "score", criterion, score, "l1")
        if (
            isinstance(channel_sparsity, bool)
            or not isinstance(channel_sparsity, (int, float))
            or not (0 < channel_sparsity < 1)
        ):
            raise ValueError(f"channel_sparsity must be in (0, 1), got {channel_sparsity!r}")
        check_choice("score", score, FILTER_SCORES)
        check_choice("layers", layers, LAYERS)
        # The schedule (one-shot or iterative) counts shares of filters here, not of weights.
        super().__init__(
            epochs_per_round=epochs_per_round,
            prune_fraction=prune_fraction,
            target_sparsity=channel_sparsity,
            score="magnitude",
            scope="layerwise",
            distribution="uniform",
            reset=reset,
            rewind_epoch=rewind_epoch,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            dense_checkpoint=dense_checkpoint,
            evaluate_test=evaluate_test,
            seed=seed,
            log_chart=log_chart,
        )
        self.score = score  # the filter score; the round machinery's weight score is unused here
        self.layers = layers
        self.channel_include = list(include) if include is not None else None
        self.channel_exclude = list(exclude) if exclude is not None else None
        self._groups: list[ChannelGroup] = []
        self._streams: list[tuple[ChannelGroup, ...]] = []

    # ------------------------------------------------------------------ what the method decides
    @override
    def next_masks(self, trainer: Trainer, pl_module: LightningModule, round_index: int) -> Masks:
        assert self.masks is not None
        current = Masks({group.key: self.masks[group.key] for group in self._groups})
        if self.score == "l1":
            scores = filter_l1_norms(pl_module, self._groups)
        else:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "filters", round_index))
            scores = {key: torch.rand(mask.shape, generator=generator).to(mask.device) for key, mask in current.items()}
        sparsity = self.schedule.sparsity_at(round_index)
        in_streams = {group.key for stream in self._streams for group in stream}
        alone = [group.key for group in self._groups if group.key not in in_streams]
        channels = dict(current.items())
        if alone:
            by_layer = layer_channel_masks(
                {key: scores[key] for key in alone}, Masks({key: current[key] for key in alone}), sparsity
            )
            channels.update(by_layer.items())
        if self._streams:
            by_stream = stream_channel_masks(scores, current, self._streams, sparsity)
            channels.update({key: by_stream[key] for key in in_streams})
        channels = Masks(channels)
        expanded = expand_channel_masks(pl_module, self._groups, channels)
        return self.masks & {name: expanded.get(name, mask) for name, mask in self.masks.items()}

    def channel_sparsity(self) -> float | None:
        """Share of the ranked channels the current masks prune; ``None`` before ``setup``."""
        if self.masks is None or not self._groups:
            return None
        kept = sum(int(self.masks[group.key].sum()) for group in self._groups)
        total = sum(self.masks[group.key].numel() for group in self._groups)
        return 1 - kept / total

    def summary_info(self) -> dict[str, Any]:
        """What the run pruned, for ``summary.json``: the ranked layers and the share of their channels pruned."""
        return {
            "score": self.score,
            "criterion": self.score,  # the key's name before "score"; kept for one release, for readers of old keys
            "layers": self.layers,
            "ranked_layers": [group.bn for group in self._groups],
            "residual_streams": [[group.bn for group in stream] for stream in self._streams],
            "channel_sparsity": self.channel_sparsity(),
        }

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        groups = channel_groups(pl_module, self.channel_include, self.channel_exclude)
        with_producer = [group for group in groups if group.producer is not None]
        groups = [group for group in with_producer if self.layers != "inner" or group.inner]
        if self.layers == "stage":
            self._streams = residual_streams(pl_module, [group for group in with_producer if not group.inner])
            in_streams = {group.bn for stream in self._streams for group in stream}
            groups = [group for group in groups if group.inner or group.bn in in_streams]
        if not groups:
            raise ValueError(
                f"FilterPruning with layers: {self.layers} finds no convolution + BatchNorm to rank in this model"
                + ("; layers: all also ranks those on residual streams" if self.layers == "inner" else "")
            )
        self._groups = groups
        # Masked: every Conv/Linear weight (for the sparsity the run reports) plus the ranked BatchNorms' γ and β.
        for group in groups:
            bn = pl_module.get_submodule(group.bn)
            self._params[f"{group.bn}.weight"] = bn.weight
            self._params[f"{group.bn}.bias"] = bn.bias
