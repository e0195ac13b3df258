"""Pruning and sparse-training callbacks for PyTorch Lightning, built on one mask engine.

The engine (plain functions on tensors, unit-tested): :mod:`~pruning_callbacks.masks`,
:mod:`~pruning_callbacks.parameters`, :mod:`~pruning_callbacks.scores`, :mod:`~pruning_callbacks.distributions`,
:mod:`~pruning_callbacks.selection`, :mod:`~pruning_callbacks.schedules`, :mod:`~pruning_callbacks.apply`.
The callbacks wire Lightning hooks to it: :class:`MaskedTraining` (the base) and the methods.
"""

from pruning_callbacks.base import MaskedTraining
from pruning_callbacks.dynamic import SET, RigL, StaticSparse
from pruning_callbacks.early_bird import EarlyBird
from pruning_callbacks.filters import FilterPruning
from pruning_callbacks.init_pruning import MaskRecipe
from pruning_callbacks.iterative import HanMagnitude, IterativePruning, LotteryTicket
from pruning_callbacks.masks import Masks
from pruning_callbacks.prune_at_init import PruneAtInit
from pruning_callbacks.scheduled import ScheduledPruning

__all__ = [
    "SET",
    "EarlyBird",
    "FilterPruning",
    "HanMagnitude",
    "IterativePruning",
    "LotteryTicket",
    "MaskRecipe",
    "MaskedTraining",
    "Masks",
    "PruneAtInit",
    "RigL",
    "ScheduledPruning",
    "StaticSparse",
]
