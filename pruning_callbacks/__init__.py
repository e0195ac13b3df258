"""Pruning and sparse-training callbacks for PyTorch Lightning, built on one mask engine.

Two layers:

* :mod:`pruning_callbacks.engine` is plain torch (no Lightning): masks, parameters, scores, density
  distributions, exact selection, schedules, recipes, regrowth, the mask applier, seeding and atomic files.
* :mod:`pruning_callbacks.callbacks` wires Lightning hooks to it: :class:`MaskedTraining` (the base) and the
  methods, each a score, a schedule and a distribution.

:mod:`pruning_callbacks.lightning_compat` holds every access to Lightning internals. The flat module paths of
earlier releases (``pruning_callbacks.dynamic``, ``pruning_callbacks.masks``, ...) still import, with a deprecation
warning (:mod:`pruning_callbacks._moved`).
"""

from pruning_callbacks import _moved
from pruning_callbacks.callbacks.base import MaskedTraining
from pruning_callbacks.callbacks.dynamic import SET, RigL, StaticSparse
from pruning_callbacks.callbacks.early_bird import EarlyBird
from pruning_callbacks.callbacks.filters import FilterPruning
from pruning_callbacks.callbacks.imp import HanMagnitude, LotteryTicket
from pruning_callbacks.callbacks.monitor import GradientNormMonitor
from pruning_callbacks.callbacks.prune_at_init import PruneAtInit
from pruning_callbacks.callbacks.rounds import IterativePruning
from pruning_callbacks.callbacks.scheduled import ScheduledPruning
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.recipes import MaskRecipe

_moved.install()

__all__ = [
    "SET",
    "EarlyBird",
    "FilterPruning",
    "GradientNormMonitor",
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
